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

/// Sentinel's native ASIM tables, with their real columns
/// (tests/fixtures/asim-native-tables.txt, from Microsoft's table reference).
fn asim_tables() -> Map<String, Value> {
    cas_sentinel::testing::schema::asim::native_tables()
        .iter()
        .map(|(table, cols)| {
            let cols: Vec<Value> = cols.iter().map(|(n, t)| json!([n, t])).collect();
            (table.clone(), Value::Array(cols))
        })
        .collect()
}

/// Stand-ins for Sentinel's ASIM parsers over the native tables, as Microsoft's stub
/// parsers present them: the table's columns plus the aliases and constants they add
/// (`EventSchema`, `User`, `Src`, `Dvc`…), with the parameters every ASIM parser takes.
fn asim_parsers() -> Map<String, Value> {
    let params = "(starttime:datetime=datetime(null), endtime:datetime=datetime(null))";
    let window = "| where (isnull(starttime) or TimeGenerated >= starttime) and (isnull(endtime) or TimeGenerated <= endtime)";
    let mut out = Map::new();
    for (name, table, extend) in [
        ("_Im_Authentication", "ASimAuthenticationEventLogs", "EventSchema = \"Authentication\", User = TargetUsername, Src = SrcIpAddr, IpAddr = SrcIpAddr, Dvc = DvcId, Application = TargetAppName, LogonTarget = TargetAppName, Dst = TargetAppName"),
        ("_Im_FileEvent", "ASimFileEventLogs", "User = ActorUsername, Src = SrcIpAddr, IpAddr = SrcIpAddr, Dvc = DvcId, FileName = TargetFileName, FilePath = TargetFilePath, Url = TargetUrl, Application = TargetAppName"),
        ("_Im_AuditEvent", "ASimAuditEventLogs", "EventSchema = \"AuditEvent\", User = ActorUsername, Value = NewValue, Application = TargetAppName, Dvc = DvcId, Src = SrcIpAddr, IpAddr = SrcIpAddr"),
    ] {
        out.insert(
            name.to_string(),
            json!({"params": params, "body": format!("{table}\n{window}\n| extend {extend}")}),
        );
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

/// Analyzes `input`'s queries and fails, naming each query and message, on any error.
fn assert_no_errors(input: Value) {
    let errs = errors(&analyze(input));
    assert!(
        errs.is_empty(),
        "{} KQL error(s):\n{}",
        errs.len(),
        errs.join("\n")
    );
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
    assert_no_errors(
        json!({"tables": custom_tables(), "functions": functions, "queries": queries}),
    );
}

#[test]
fn the_compatibility_cases_are_valid_against_the_real_sentinel_tables() {
    let queries: Vec<Value> = compat_cases()
        .into_iter()
        .map(|(file, _, text)| json!({"name": format!("tests/kql/compat/{file}"), "text": text}))
        .collect();
    assert_no_errors(json!({"tables": sentinel_tables(), "queries": queries}));
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

/// Runs `tests/kql/content.js` with `arg`; its standard output (it must succeed).
fn content_js(arg: &str) -> Vec<u8> {
    let out = std::process::Command::new("node")
        .args([root().join("tests/kql/content.js").to_str().unwrap(), arg])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The rules and hunting queries as parsed from their YAML (by js-yaml, under node).
fn content_yaml() -> Value {
    serde_json::from_slice(&content_js("--parsed")).unwrap()
}

/// Every query of the workbook: (tile or parameter name, query), with the `{Tenant}`
/// parameter as the workbook substitutes it when All is picked (its `selectAllValue`,
/// quoted), so the analyzer reads what the workspace runs.
fn workbook_queries() -> Vec<(String, String)> {
    fn walk(items: &Value, out: &mut Vec<(String, String)>) {
        for item in items.as_array().into_iter().flatten() {
            if item["type"] == 3 {
                let query = item["content"]["query"].as_str().unwrap();
                out.push((
                    format!("infra/sentinel/workbook.json tile {}", item["name"]),
                    query.replace("{Tenant}", "'*'"),
                ));
            }
            for p in item["content"]["parameters"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(q) = p["query"].as_str() {
                    out.push((
                        format!("infra/sentinel/workbook.json parameter {}", p["name"]),
                        q.to_string(),
                    ));
                }
            }
            walk(&item["content"]["items"], out);
        }
    }
    let text = std::fs::read_to_string(root().join("infra/sentinel/workbook.json")).unwrap();
    let wb: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(wb["version"], "Notebook/1.0");
    let mut out = Vec::new();
    walk(&wb["items"], &mut out);
    out
}

/// The data connector's page, as infra/ deploys it.
fn connector() -> Value {
    let text = std::fs::read_to_string(root().join("infra/sentinel/connector.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every query of the connector's page: its graphs, samples, last-data and connectivity
/// queries, as (where, query).
fn connector_queries() -> Vec<(String, String)> {
    let c = connector();
    let mut out = Vec::new();
    let mut add = |what: String, q: &Value| {
        out.push((
            format!("infra/sentinel/connector.json {what}"),
            q.as_str().unwrap().to_string(),
        ))
    };
    for g in c["graphQueries"].as_array().unwrap() {
        add(format!("graph {}", g["metricName"]), &g["baseQuery"]);
    }
    for q in c["sampleQueries"].as_array().unwrap() {
        add(format!("sample {}", q["description"]), &q["query"]);
    }
    for d in c["dataTypes"].as_array().unwrap() {
        add(
            format!("last data of {}", d["name"]),
            &d["lastDataReceivedQuery"],
        );
    }
    for k in c["connectivityCriteria"].as_array().unwrap() {
        for v in k["value"].as_array().unwrap() {
            add(format!("connectivity {}", k["type"]), v);
        }
    }
    out
}

/// The connector Sentinel shows: it names every table we write, checks that rows arrive, and
/// is the one every rule and hunting query requires, for exactly the tables it reads.
#[test]
fn the_data_connector_names_every_table_and_the_content_requires_it() {
    let c = connector();
    let mut ours: Vec<String> = custom_tables()
        .keys()
        .filter(|t| t.ends_with("_CL"))
        .cloned()
        .chain(asim_tables().keys().cloned())
        .collect();
    ours.sort();
    let mut named: Vec<String> = c["dataTypes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect();
    named.sort();
    assert_eq!(
        named, ours,
        "one data type per table, the ASIM tables we write included"
    );
    for field in [
        "title",
        "publisher",
        "descriptionMarkdown",
        "graphQueriesTableName",
    ] {
        assert!(c[field].as_str().is_some_and(|s| !s.is_empty()), "{field}");
    }
    assert_eq!(c["connectivityCriteria"][0]["type"], "IsConnectedQuery");
    assert!(c["permissions"]["customs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["description"]
            .as_str()
            .unwrap()
            .contains("Investigation.Read")));
    assert!(c["instructionSteps"].as_array().unwrap().len() >= 3);
    let tables_bicep = std::fs::read_to_string(root().join("infra/tables.bicep")).unwrap();
    assert!(
        tables_bicep.contains("name: 'CasSentinel'\n  kind: 'GenericUI'")
            && tables_bicep.contains("connectorUiConfig: union(connector, { id: 'CasSentinel' })"),
        "infra/tables.bicep deploys the connector as CasSentinel"
    );
    // Which table each function reads.
    let reads = [
        ("McasSecurityAlert", "McasAlerts_CL"),
        ("McasCloudAppEvents", "McasActivity_CL"),
        ("McasShadowIt", "McasShadowItReporting_CL"),
        ("_Im_Authentication", "ASimAuthenticationEventLogs"),
        ("_Im_FileEvent", "ASimFileEventLogs"),
        ("_Im_AuditEvent", "ASimAuditEventLogs"),
    ];
    let yaml = content_yaml();
    for kind in ["rules", "hunting"] {
        for r in yaml[kind].as_array().unwrap() {
            let query = r["doc"]["query"].as_str().unwrap();
            let mut tables: Vec<&str> = reads
                .iter()
                .filter(|(f, t)| query.contains(f) || query.contains(t))
                .map(|(_, t)| *t)
                .collect();
            tables.sort_unstable();
            assert_eq!(
                r["doc"]["requiredDataConnectors"],
                json!([{"connectorId": "CasSentinel", "dataTypes": tables}]),
                "{}",
                r["file"]
            );
        }
    }
}

/// The workspace the content runs in: ours, plus the Sentinel tables it may join with.
fn content_tables() -> Map<String, Value> {
    let mut t = custom_tables();
    t.extend(sentinel_tables());
    t.extend(asim_tables());
    t
}

/// The functions the content may call: ours and the ASIM parsers.
fn content_functions() -> Map<String, Value> {
    let mut f: Map<String, Value> = functions()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    f.extend(asim_parsers());
    f
}

#[test]
fn the_workbook_rules_and_hunting_queries_analyze_without_errors() {
    let yaml = content_yaml();
    let mut queries: Vec<Value> = workbook_queries()
        .into_iter()
        .map(|(name, text)| json!({"name": name, "text": text}))
        .collect();
    assert!(
        queries.len() >= 17,
        "the workbook's tiles: {}",
        queries.len()
    );
    for kind in ["rules", "hunting"] {
        for r in yaml[kind].as_array().unwrap() {
            queries.push(json!({"name": r["file"], "text": r["doc"]["query"]}));
        }
    }
    let connector = connector_queries();
    assert!(
        connector.len() >= 10,
        "the connector's queries: {}",
        connector.len()
    );
    for (name, text) in connector {
        queries.push(json!({"name": name, "text": text}));
    }
    assert!(
        queries
            .iter()
            .filter(|q| q["text"].as_str().unwrap().contains("_Im_"))
            .count()
            >= 6,
        "the workbook's ASIM tiles and the ASIM hunting queries"
    );
    assert_no_errors(
        json!({"tables": content_tables(), "functions": content_functions(), "queries": queries}),
    );
}

/// The MITRE ATT&CK tactics Sentinel accepts in a rule.
const TACTICS: [&str; 17] = [
    "Reconnaissance",
    "ResourceDevelopment",
    "InitialAccess",
    "Execution",
    "Persistence",
    "PrivilegeEscalation",
    "DefenseEvasion",
    "CredentialAccess",
    "Discovery",
    "LateralMovement",
    "Collection",
    "Exfiltration",
    "CommandAndControl",
    "Impact",
    "PreAttack",
    "ImpairProcessControl",
    "InhibitResponseFunction",
];

/// Entity types and their identifiers, as Sentinel's entity mapping takes them.
fn identifiers(entity: &str) -> &'static [&'static str] {
    match entity {
        "Account" => &[
            "Name",
            "FullName",
            "NTDomain",
            "DnsDomain",
            "UPNSuffix",
            "Sid",
            "AadTenantId",
            "AadUserId",
            "PUID",
            "IsDomainJoined",
            "DisplayName",
            "ObjectGuid",
            "CloudAppAccountId",
        ],
        "IP" => &["Address"],
        "CloudApplication" => &["AppId", "Name", "InstanceName"],
        "Host" => &[
            "DnsDomain",
            "NTDomain",
            "HostName",
            "FullName",
            "NetBiosName",
            "AzureID",
            "OMSAgentID",
            "OSFamily",
            "OSVersion",
            "IsDomainJoined",
        ],
        "URL" => &["Url"],
        "File" => &["Directory", "Name"],
        "Mailbox" => &[
            "MailboxPrimaryAddress",
            "DisplayName",
            "Upn",
            "ExternalDirectoryObjectId",
            "RiskLevel",
        ],
        _ => &[],
    }
}

#[test]
fn the_rule_and_hunting_files_have_the_azure_sentinel_shape() {
    let yaml = content_yaml();
    let rules = yaml["rules"].as_array().unwrap();
    let hunting = yaml["hunting"].as_array().unwrap();
    assert!(
        rules.len() >= 4 && hunting.len() >= 10,
        "{} rules, {} hunting queries",
        rules.len(),
        hunting.len()
    );
    // Each rule's output columns, from the analyzer.
    let exprs: Vec<&str> = rules
        .iter()
        .map(|r| r["doc"]["query"].as_str().unwrap())
        .collect();
    let answer =
        analyze(json!({"tables": content_tables(), "functions": functions(), "schemas": exprs}));
    let mut problems = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for r in rules.iter().chain(hunting) {
        let (file, doc) = (r["file"].as_str().unwrap(), &r["doc"]);
        let mut bad = |what: String| problems.push(format!("{file}: {what}"));
        let id = doc["id"].as_str().unwrap_or_default();
        if !cas_sentinel::testing::schema::entities::is_guid(id) || !ids.insert(id.to_string()) {
            bad(format!("id {id:?} is not a unique GUID"));
        }
        for field in ["name", "description", "query"] {
            if doc[field].as_str().is_none_or(|s| s.trim().is_empty()) {
                bad(format!("{field} missing"));
            }
        }
        if !doc["requiredDataConnectors"].is_array() {
            bad("requiredDataConnectors missing".into());
        }
        for t in doc["tactics"].as_array().into_iter().flatten() {
            if !TACTICS.contains(&t.as_str().unwrap_or_default()) {
                bad(format!("unknown tactic {t}"));
            }
        }
        for t in doc["relevantTechniques"].as_array().into_iter().flatten() {
            let t = t.as_str().unwrap_or_default();
            let ok =
                t.len() >= 5 && t.starts_with('T') && t[1..5].bytes().all(|b| b.is_ascii_digit());
            if !ok {
                bad(format!("technique {t:?} is not T1234 or T1234.001"));
            }
        }
    }
    for r in rules {
        let (file, doc) = (r["file"].as_str().unwrap(), &r["doc"]);
        let mut bad = |what: String| problems.push(format!("{file}: {what}"));
        let query = doc["query"].as_str().unwrap();
        let columns: Vec<String> = answer["schemas"][query]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c[0].as_str().unwrap().to_string())
            .collect();
        let has = |c: &str| columns.iter().any(|x| x == c);
        if doc["kind"] != "Scheduled" || doc["version"].as_str().is_none() {
            bad("kind must be Scheduled, with a version".into());
        }
        if !["Informational", "Low", "Medium", "High"]
            .contains(&doc["severity"].as_str().unwrap_or_default())
        {
            bad(format!("severity {}", doc["severity"]));
        }
        if !["gt", "lt", "eq", "ne"].contains(&doc["triggerOperator"].as_str().unwrap_or_default())
            || !doc["triggerThreshold"].is_u64()
        {
            bad("triggerOperator/triggerThreshold".into());
        }
        for f in ["queryFrequency", "queryPeriod"] {
            let v = doc[f].as_str().unwrap_or_default();
            if v.len() < 2
                || !v[..v.len() - 1].bytes().all(|b| b.is_ascii_digit())
                || !v.ends_with(['m', 'h', 'd'])
            {
                bad(format!("{f} {v:?}"));
            }
        }
        let mappings = doc["entityMappings"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if mappings.is_empty() {
            bad("no entity mappings".into());
        }
        for m in &mappings {
            let entity = m["entityType"].as_str().unwrap_or_default();
            if identifiers(entity).is_empty() {
                bad(format!("unknown entity type {entity}"));
            }
            // Sentinel's entities reference: "up to three identifiers for a single entity
            // mapping".
            let n = m["fieldMappings"].as_array().map_or(0, Vec::len);
            if n > 3 {
                bad(format!(
                    "{entity} maps {n} identifiers; Sentinel takes at most 3"
                ));
            }
            for f in m["fieldMappings"].as_array().into_iter().flatten() {
                let (id, col) = (
                    f["identifier"].as_str().unwrap_or_default(),
                    f["columnName"].as_str().unwrap_or_default(),
                );
                if !identifiers(entity).contains(&id) {
                    bad(format!("{entity} has no identifier {id}"));
                }
                if !has(col) {
                    bad(format!(
                        "entity mapping column {col} is not in the query's output {columns:?}"
                    ));
                }
            }
        }
        let custom = doc["customDetails"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (k, v) in &custom {
            if !has(v.as_str().unwrap_or_default()) {
                bad(format!("custom detail {k} reads {v}, not in the output"));
            }
        }
        for key in doc["incidentConfiguration"]["groupingConfiguration"]["groupByCustomDetails"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if !custom.contains_key(key.as_str().unwrap_or_default()) {
                bad(format!(
                    "groups by custom detail {key}, which the rule does not define"
                ));
            }
        }
        let o = &doc["alertDetailsOverride"];
        for f in ["alertSeverityColumnName", "alertTacticsColumnName"] {
            if let Some(c) = o[f].as_str() {
                if !has(c) {
                    bad(format!("{f} {c} not in the output"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_deployed_content_is_generated_from_the_yaml() {
    content_js("--check");
    let text =
        std::fs::read_to_string(root().join("infra/generated/sentinel-content.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let rule = |file: &str| {
        v["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["file"].as_str().unwrap().ends_with(file))
            .unwrap()
    };
    let incident = rule("cas-alert-incident.yaml");
    let g = &incident["properties"]["incidentConfiguration"]["groupingConfiguration"];
    assert_eq!(
        (g["enabled"].as_bool(), g["matchingMethod"].as_str()),
        (Some(true), Some("Selected"))
    );
    assert_eq!(
        g["groupByCustomDetails"],
        json!(["Tenant", "CasAlertId"]),
        "later status rows join the same incident, within the alert's own tenant"
    );
    assert_eq!(incident["properties"]["queryFrequency"], "PT5M");
    let mass = rule("mass-download-across-apps.yaml");
    assert_eq!(mass["parameters"], json!({"downloadThreshold": 200}));
    // Every threshold has its value in infra/'s ruleThresholds, with the same default.
    let main = std::fs::read_to_string(root().join("infra/main.bicep")).unwrap();
    for r in v["rules"].as_array().unwrap() {
        for (k, default) in r["parameters"].as_object().unwrap() {
            assert!(
                main.contains(&format!("  {k}: {default}\n")),
                "ruleThresholds lacks {k}: {default}"
            );
        }
        // A rule that looks back lookbackDays reads that far by default, and infra/ keeps
        // its queryPeriod with the deployment's value.
        if let Some(days) = r["parameters"].get("lookbackDays") {
            assert_eq!(
                r["properties"]["queryPeriod"],
                format!("P{days}D"),
                "{}",
                r["id"]
            );
        }
    }
    let tables = std::fs::read_to_string(root().join("infra/tables.bicep")).unwrap();
    assert!(
        tables.contains("queryPeriod: contains(r.parameters, 'lookbackDays') ? 'P${ruleThresholds.lookbackDays}D'"),
        "infra/tables.bicep sets queryPeriod from lookbackDays"
    );
}

/// The KQL the advanced hunting source sends analyzes cleanly against CloudAppEvents' real
/// columns: the window's rows and the count that splits a full window.
#[test]
fn the_hunting_queries_we_send_analyze_against_cloudappevents() {
    use cas_sentinel::testing::graph::hunting::{count_query, query, ROWS};
    let (from, to) = (1_795_944_000_000, 1_795_947_600_000);
    let queries = vec![
        json!({"name": "hunting rows", "text": query(from, to, ROWS + 1)}),
        json!({"name": "hunting count", "text": count_query(from, to, 3_600)}),
    ];
    assert_no_errors(json!({"tables": sentinel_tables(), "functions": {}, "queries": queries}));
    // And the analyzer is not lenient about it: a column CloudAppEvents lacks is an error.
    let bad = vec![
        json!({"name": "bad", "text": query(from, to, 1).replace("take", "where NoSuchColumn == 1 | take")}),
    ];
    let answer = analyze(json!({"tables": sentinel_tables(), "functions": {}, "queries": bad}));
    assert!(!errors(&answer).is_empty(), "{answer}");
}

#[test]
fn every_rule_says_the_tenant_and_every_tile_follows_the_tenant_parameter() {
    // Rules: the tenant is a custom detail (an incident per tenant where they group); the
    // query's own check of output columns is above. The Account entity has no room for
    // its AadTenantId: Name, UPNSuffix and AadUserId take its three identifiers.
    let yaml = content_yaml();
    let mut problems = Vec::new();
    for (file, doc) in yaml.as_object().unwrap() {
        if !file.contains("rules/") {
            continue;
        }
        if doc["customDetails"]["Tenant"] != "CasTenant" {
            problems.push(format!("{file}: no Tenant custom detail reading CasTenant"));
        }
    }
    // Workbook: every tile over our tables filters on {Tenant} (the ASIM tiles show
    // every source's rows, which carry no tenant column).
    let text = std::fs::read_to_string(root().join("infra/sentinel/workbook.json")).unwrap();
    let wb: Value = serde_json::from_str(&text).unwrap();
    fn tiles(items: &Value, group: &str, out: &mut Vec<(String, String, String)>) {
        for item in items.as_array().into_iter().flatten() {
            if item["type"] == 3 {
                out.push((
                    group.to_string(),
                    item["name"].as_str().unwrap().to_string(),
                    item["content"]["query"].as_str().unwrap().to_string(),
                ));
            }
            let name = item["name"].as_str().unwrap_or(group);
            tiles(&item["content"]["items"], name, out);
        }
    }
    let mut all = Vec::new();
    tiles(&wb["items"], "", &mut all);
    assert!(all.len() > 15);
    for (group, name, query) in all {
        if group != "asim" && !query.contains("CasTenant in ({Tenant})") {
            problems.push(format!("workbook tile {name} ignores the Tenant parameter"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
