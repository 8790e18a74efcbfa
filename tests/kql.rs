//! Every KQL text the project ships, checked by Microsoft's own Kusto analyzer
//! (`@kusto/language-service-next`, pinned in package-lock.json, run under node with no
//! network) against a workspace built from `infra/generated/tables.json` plus the
//! functions in `infra/sentinel/functions/`: zero errors, or the test names the query and
//! the message.
//!
//! Also: each function presents the columns and types of the Sentinel table it stands in
//! for, and queries written the way Sentinel content queries SecurityAlert,
//! McasShadowItReporting and CloudAppEvents (`tests/kql/compat/`) analyze cleanly both
//! against the real table and, with only the table name changed, against our function.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Which function stands in for which Sentinel table.
const STAND_INS: [(&str, &str); 3] = [
    ("SecurityAlert", "McasSecurityAlert"),
    ("McasShadowItReporting", "McasShadowIt"),
    ("CloudAppEvents", "McasCloudAppEvents"),
];

/// Columns every Log Analytics table has besides its own (Azure Monitor's standard columns).
const STANDARD_COLUMNS: [(&str, &str); 8] = [
    ("TenantId", "string"),
    ("Type", "string"),
    ("_ResourceId", "string"),
    ("_SubscriptionId", "string"),
    ("_BilledSize", "real"),
    ("_IsBillable", "string"),
    ("_TimeReceived", "datetime"),
    ("_ItemId", "string"),
];

/// The table API's type names, as Kusto schema strings spell them.
fn kusto_type(t: &str) -> &str {
    match t {
        "dateTime" => "datetime",
        "boolean" => "bool",
        other => other,
    }
}

/// Our custom tables, as deployed, and the Application Insights tables in the same
/// workspace that the monitoring alerts read.
fn custom_tables() -> Map<String, Value> {
    let text = std::fs::read_to_string(root().join("infra/generated/tables.json")).unwrap();
    let tables: Value = serde_json::from_str(&text).unwrap();
    let mut out = Map::new();
    for (name, t) in tables.as_object().unwrap() {
        let mut cols: Vec<Value> = t["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| json!([c["name"], kusto_type(c["type"].as_str().unwrap())]))
            .collect();
        cols.extend(STANDARD_COLUMNS.iter().map(|(n, t)| json!([n, t])));
        out.insert(name.clone(), Value::Array(cols));
    }
    let text = std::fs::read_to_string(root().join("tests/kql/workspace-tables.json")).unwrap();
    let app: Map<String, Value> = serde_json::from_str(&text).unwrap();
    out.extend(app.into_iter().filter(|(k, _)| k != "_comment"));
    out
}

/// Every other `.kql` file under `infra/` (the monitoring alerts): path → text.
fn infra_queries() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "kql")
                && !p.to_string_lossy().contains("sentinel/functions")
            {
                let name = p.strip_prefix(root()).unwrap().display().to_string();
                out.push((name, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join("infra"), &mut out);
    out.sort();
    out
}

/// The Sentinel tables the functions stand in for.
fn sentinel_tables() -> Map<String, Value> {
    let text = std::fs::read_to_string(root().join("tests/kql/sentinel-tables.json")).unwrap();
    let mut v: Map<String, Value> = serde_json::from_str(&text).unwrap();
    v.remove("_comment");
    v
}

/// The shipped functions: file stem → body.
fn functions() -> BTreeMap<String, String> {
    let dir = root().join("infra/sentinel/functions");
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "kql") {
            let name = p.file_stem().unwrap().to_string_lossy().to_string();
            out.insert(name, std::fs::read_to_string(&p).unwrap());
        }
    }
    out
}

/// KQL in a Markdown file: fenced `kusto`/`kql` blocks (queries separated by blank lines)
/// and inline code that starts with one of our tables or functions and a pipe.
fn markdown_queries(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.strip_prefix(root()).unwrap().display().to_string();
    let mut out = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        match (&mut block, fence) {
            (None, true) => {
                let lang = line.trim_start().trim_start_matches('`').trim();
                if lang == "kusto" || lang == "kql" {
                    block = Some(Vec::new());
                }
            }
            (Some(lines), true) => {
                for (k, q) in lines.join("\n").split("\n\n").enumerate() {
                    if !q.trim().is_empty() {
                        out.push((
                            format!("{name} (block ending line {}, query {})", i + 1, k + 1),
                            q.to_string(),
                        ));
                    }
                }
                block = None;
            }
            (Some(lines), false) => lines.push(line),
            (None, false) => {
                for (k, span) in line.split('`').enumerate() {
                    let starts = ["Mcas", "SecurityAlert", "CloudAppEvents"]
                        .iter()
                        .any(|p| span.starts_with(p));
                    if k % 2 == 1 && starts && span.contains('|') {
                        out.push((format!("{name}:{} `{span}`", i + 1), span.to_string()));
                    }
                }
            }
        }
    }
    out
}

fn every_markdown_file() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    for e in std::fs::read_dir(root().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    files.sort();
    files
}

/// Runs the analyzer; returns its answer.
fn analyze(input: Value) -> Value {
    use std::io::Write;
    let mut child = std::process::Command::new("node")
        .arg(root().join("tests/kql/analyze.js"))
        .current_dir(root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node runs (scripts/setup installs the Kusto language service)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the analyzer failed (is @kusto/language-service-next installed? run scripts/setup): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn errors(answer: &Value) -> Vec<String> {
    answer["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] == "Error")
        .map(|d| {
            format!(
                "{}: {} {} ({})",
                d["query"].as_str().unwrap(),
                d["code"].as_str().unwrap(),
                d["message"].as_str().unwrap(),
                d["at"].as_str().unwrap()
            )
        })
        .collect()
}

/// The compat cases: (file, the real tables it names, its text).
fn compat_cases() -> Vec<(String, Vec<String>, String)> {
    let dir = root().join("tests/kql/compat");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let tables = text
            .lines()
            .find_map(|l| l.strip_prefix("// table: "))
            .unwrap_or_else(|| panic!("{} names its tables in a `// table:` line", p.display()))
            .split(',')
            .map(|t| t.trim().to_string())
            .collect();
        out.push((
            p.file_name().unwrap().to_string_lossy().to_string(),
            tables,
            text,
        ));
    }
    out.sort();
    assert!(out.len() >= 10, "the compatibility cases are there");
    out
}

/// `text` with each whole-word use of a Sentinel table replaced by its stand-in function.
fn with_stand_ins(text: &str) -> String {
    let mut out = text.to_string();
    for (table, function) in STAND_INS {
        let mut replaced = String::new();
        let mut rest = out.as_str();
        while let Some(i) = rest.find(table) {
            let before = rest[..i].chars().last();
            let after = rest[i + table.len()..].chars().next();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            replaced.push_str(&rest[..i]);
            replaced.push_str(if word(before) || word(after) {
                table
            } else {
                function
            });
            rest = &rest[i + table.len()..];
        }
        replaced.push_str(rest);
        out = replaced;
    }
    out
}

#[test]
fn every_shipped_query_analyzes_without_errors() {
    let functions = functions();
    assert_eq!(
        functions.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["McasCloudAppEvents", "McasSecurityAlert", "McasShadowIt"]
    );
    let mut queries: Vec<Value> = functions
        .iter()
        .map(|(n, body)| json!({"name": format!("infra/sentinel/functions/{n}.kql"), "text": body}))
        .collect();
    let alerts = infra_queries();
    assert!(alerts.len() >= 5, "the monitoring alerts: {alerts:?}");
    queries.extend(
        alerts
            .into_iter()
            .map(|(name, text)| json!({"name": name, "text": text})),
    );
    for f in every_markdown_file() {
        queries.extend(
            markdown_queries(&f)
                .into_iter()
                .map(|(name, text)| json!({"name": name, "text": text})),
        );
    }
    assert!(
        queries.len() >= 6,
        "the functions and the docs' KQL: {queries:?}"
    );
    for (file, _, text) in compat_cases() {
        queries.push(json!({"name": format!("tests/kql/compat/{file} (through the functions)"), "text": with_stand_ins(&text)}));
    }
    let answer =
        analyze(json!({"tables": custom_tables(), "functions": functions, "queries": queries}));
    let errs = errors(&answer);
    assert!(
        errs.is_empty(),
        "{} KQL error(s):\n{}",
        errs.len(),
        errs.join("\n")
    );
}

#[test]
fn the_compatibility_cases_are_valid_against_the_real_sentinel_tables() {
    let queries: Vec<Value> = compat_cases()
        .into_iter()
        .map(|(file, _, text)| json!({"name": format!("tests/kql/compat/{file}"), "text": text}))
        .collect();
    let answer = analyze(json!({"tables": sentinel_tables(), "queries": queries}));
    let errs = errors(&answer);
    assert!(errs.is_empty(), "{}", errs.join("\n"));
}

#[test]
fn each_function_has_its_tables_columns_with_its_types() {
    let answer = analyze(json!({
        "tables": custom_tables(),
        "functions": functions(),
        "schemas": STAND_INS.iter().map(|(_, f)| *f).collect::<Vec<_>>(),
    }));
    let sentinel = sentinel_tables();
    let mut problems = Vec::new();
    for (table, function) in STAND_INS {
        let got: BTreeMap<String, String> = answer["schemas"][function]
            .as_array()
            .unwrap_or_else(|| panic!("no schema for {function}: {answer}"))
            .iter()
            .map(|c| {
                (
                    c[0].as_str().unwrap().to_string(),
                    c[1].as_str().unwrap().to_string(),
                )
            })
            .collect();
        for col in sentinel[table].as_array().unwrap() {
            let (name, ty) = (col[0].as_str().unwrap(), col[1].as_str().unwrap());
            if name.starts_with('_') {
                continue; // set by Log Analytics itself, on every table
            }
            // McasShadowItReporting's byte and event counts are int; Graph's pass 2^31, so
            // ours are long (docs/tables.md), which every query on an int also accepts.
            let widened = table == "McasShadowItReporting"
                && ty == "int"
                && got.get(name).map(String::as_str) == Some("long");
            match got.get(name) {
                Some(t) if t == ty || widened => {}
                Some(t) => problems.push(format!("{function}.{name} is {t}; {table} has {ty}")),
                None => problems.push(format!("{function} lacks {table}'s {name} ({ty})")),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_query_with_a_mistake_is_caught() {
    // The check itself: an unknown column and a type error are reported, so a green run
    // means the analyzer really looked.
    let answer = analyze(json!({
        "tables": custom_tables(),
        "functions": functions(),
        "queries": [
            {"name": "unknown column", "text": "McasSecurityAlert | where Severity == 'High'"},
            {"name": "type error", "text": "McasCloudAppEvents | where IsAdminOperation > now()"},
            {"name": "fine", "text": "McasShadowIt | take 1"},
        ],
    }));
    let errs = errors(&answer);
    assert!(
        errs.iter().any(|e| e.starts_with("unknown column")),
        "{errs:?}"
    );
    assert!(errs.iter().any(|e| e.starts_with("type error")), "{errs:?}");
    assert!(!errs.iter().any(|e| e.starts_with("fine")), "{errs:?}");
}
