// Parses and semantically analyzes KQL with Microsoft's Kusto language service
// (@kusto/language-service-next, pinned in package-lock.json), offline.
//
// stdin: {"tables": {name: [[column, type], ...]}, "functions": {name: body or {params, body}},
//         "queries": [{"name", "text"}], "schemas": [expression, ...]}
// stdout: {"diagnostics": [{"query", "severity", "code", "message", "at"}],
//          "schemas": {expression: [[column, type], ...]}}
"use strict";
require("@kusto/language-service-next/bridge.js");
require("@kusto/language-service-next/Kusto.Language.Bridge.js");

const K = Kusto.Language;
const S = K.Symbols;

const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const symbols = [];
for (const [name, columns] of Object.entries(input.tables || {})) {
  const schema = "(" + columns.map(([c, t]) => `['${c}']:${t}`).join(", ") + ")";
  symbols.push(new S.TableSymbol.$ctor7(name, schema, null));
}
for (const [name, f] of Object.entries(input.functions || {})) {
  // A body alone, or {params, body} for a function that takes parameters.
  const params = typeof f === "string" ? "()" : f.params;
  const body = typeof f === "string" ? f : f.body;
  symbols.push(new S.FunctionSymbol.$ctor16(name, params, "{\n" + body + "\n}", null));
}
const db = new S.DatabaseSymbol.$ctor3("workspace", null, Bridge.toList(symbols), false);
const globals = K.GlobalState.Default.WithDatabase(db);

const out = { diagnostics: [], schemas: {} };
for (const q of input.queries || []) {
  const code = K.KustoCode.ParseAndAnalyze(q.text, globals);
  for (const d of Bridge.toArray(code.GetDiagnostics())) {
    const line = q.text.slice(0, d.Start).split("\n").length;
    out.diagnostics.push({
      query: q.name,
      severity: String(d.Severity),
      code: d.Code,
      message: d.Message,
      at: `line ${line}: ${q.text.substr(d.Start, Math.max(d.Length, 1)).slice(0, 60)}`,
    });
  }
}
for (const expr of input.schemas || []) {
  const code = K.KustoCode.ParseAndAnalyze(expr, globals);
  const t = code.ResultType;
  const cols = t && t.Columns ? Bridge.toArray(t.Columns) : [];
  out.schemas[expr] = cols.map((c) => [c.Name, c.Type.Name]);
}
process.stdout.write(JSON.stringify(out));
