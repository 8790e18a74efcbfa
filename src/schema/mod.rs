//! CAS records → rows of the Sentinel custom tables, one file per table.
//!
//! Each table is a typed row struct, its column list (the stream declaration the DCR and
//! the ingestion simulator check against), and one mapping function. Every row carries
//! the CAS id and all of the source record (a bulky field with a column of its own is not
//! repeated in `SourceRecord`), and a record that does not map cleanly still
//! becomes a row, with `MappingIssues` saying what was missing: nothing is dropped.

pub(crate) mod activities;
pub(crate) mod alerts;
pub(crate) mod asim;
pub(crate) mod discovery;
pub(crate) mod entities;
#[cfg(feature = "sim")]
pub(crate) mod generate;
mod graph_alerts;
mod hunting_activities;
pub(crate) mod limits;
mod vocabulary;

use crate::json::record::{self, Record};
use crate::model::{format_ms, DataType};

use serde_json::Value;

#[cfg(feature = "sim")]
/// A Log Analytics column type, as DCR stream declarations name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ColumnType {
    /// `string`
    String,
    /// `int`
    Int,
    /// `long`
    Long,
    /// `boolean`
    Boolean,
    /// `datetime`
    DateTime,
    /// `dynamic`
    Dynamic,
}

#[cfg(feature = "sim")]
impl ColumnType {
    #[cfg(feature = "sim")]
    /// The name used in DCR stream declarations and table definitions.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ColumnType::String => "string",
            ColumnType::Int => "int",
            ColumnType::Long => "long",
            ColumnType::Boolean => "boolean",
            ColumnType::DateTime => "datetime",
            ColumnType::Dynamic => "dynamic",
        }
    }
}

#[cfg(feature = "sim")]
/// A column of a custom table: what the DCR declares, and where its value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Column {
    /// The column name (at most 45 letters, digits or underscores).
    pub name: &'static str,
    /// Its type.
    pub ty: ColumnType,
    /// Where the value comes from in the CAS record (for `docs/tables.md`).
    pub source: &'static str,
}

#[cfg(feature = "sim")]
impl Column {
    #[cfg(feature = "sim")]
    /// A column.
    pub(crate) const fn new(name: &'static str, ty: ColumnType, source: &'static str) -> Self {
        Column { name, ty, source }
    }
}

/// The column holding the CAS record; [`row_bytes`] writes it by hand.
const SOURCE_RECORD: &str = "SourceRecord";

#[cfg(feature = "sim")]
/// `SourceRecord`, as each table describes it.
pub(crate) const fn source_record_column(source: &'static str) -> Column {
    Column::new(SOURCE_RECORD, ColumnType::Dynamic, source)
}

#[cfg(feature = "sim")]
/// `MappingIssues`, in every table.
pub(crate) const MAPPING_ISSUES: Column = Column::new(
    "MappingIssues",
    ColumnType::String,
    "what could not be mapped, if anything",
);

#[cfg(feature = "sim")]
/// `TruncatedFields`, in every table, filled by [`crate::schema::limits::fit_fields`].
pub(crate) const TRUNCATED_FIELDS: Column = Column::new(
    crate::schema::limits::TRUNCATED_COLUMN,
    ColumnType::String,
    "columns cut to 32,766 bytes (the service's field limit), if any",
);

#[cfg(feature = "sim")]
/// `CasTenant`, in every table: which of the deployment's tenants a row came from.
/// (`TenantId` is Log Analytics' own column, the workspace's id, in every table.)
pub(crate) const CAS_TENANT: Column = Column::new(
    TENANT_COLUMN,
    ColumnType::String,
    "the tenant's name in `CAS_TENANTS`; absent without it",
);

#[cfg(feature = "sim")]
/// `CasTenantId`, in every table: the Entra tenant the row's tenant reads.
pub(crate) const CAS_TENANT_ID: Column = Column::new(
    TENANT_ID_COLUMN,
    ColumnType::String,
    "the tenant's `AZURE_TENANT_ID` (its Entra tenant id), when `CAS_TENANTS` names it and the setting is set",
);

/// The tenant name's column.
pub(crate) const TENANT_COLUMN: &str = "CasTenant";
/// The Entra tenant id's column.
pub(crate) const TENANT_ID_COLUMN: &str = "CasTenantId";

/// The tenant columns of every row of one tenant, serialized once (each a member of the
/// row's object, then a comma); empty for the unnamed tenant, whose rows are as before.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantColumns(Vec<u8>);

impl TenantColumns {
    /// The unnamed tenant's: none.
    #[cfg(any(test, feature = "sim"))]
    pub const NONE: TenantColumns = TenantColumns(Vec::new());

    /// The columns of `tenant`, reading the Entra tenant `entra_id`.
    pub fn new(tenant: Option<&crate::model::TenantName>, entra_id: Option<&str>) -> Self {
        let Some(t) = tenant else {
            return TenantColumns::default();
        };
        let mut out = Vec::new();
        let mut member = |name: &str, value: &str| {
            serde_json::to_writer(&mut out, name).expect("strings serialize");
            out.push(b':');
            serde_json::to_writer(&mut out, value).expect("strings serialize");
            out.push(b',');
        };
        member(TENANT_COLUMN, t.as_str());
        if let Some(id) = entra_id {
            member(TENANT_ID_COLUMN, id);
        }
        TenantColumns(out)
    }
}

#[cfg(feature = "sim")]
/// The columns of a data type's table.
pub(crate) fn columns(data_type: DataType) -> &'static [Column] {
    match data_type {
        DataType::Alerts => alerts::COLUMNS,
        DataType::Activities => activities::COLUMNS,
        DataType::Discovery => discovery::COLUMNS,
    }
}

#[cfg(feature = "sim")]
/// What a reader of a data type's table should know beyond its columns (for
/// `docs/tables.md`).
pub(crate) fn notes(data_type: DataType) -> &'static str {
    match data_type {
        DataType::Discovery => discovery::NOTES,
        DataType::Alerts => alerts::NOTES,
        DataType::Activities => activities::NOTES,
    }
}

#[cfg(feature = "sim")]
/// Maps one CAS record to its table row, as a JSON value (for tests and tools; the
/// ingest path serializes straight to bytes with [`row_bytes`]).
pub fn to_row(data_type: DataType, record: &Value) -> Value {
    to_row_observed(data_type, record, None)
}

#[cfg(feature = "sim")]
/// [`to_row`] for a changed alert seen at `observed` (Unix ms), its `TimeGenerated`.
pub(crate) fn to_row_observed(data_type: DataType, record: &Value, observed: Option<i64>) -> Value {
    let raw = record::raw_of(record);
    serde_json::from_slice(&row_bytes(data_type, &Record::new(&raw), observed))
        .expect("rows are valid JSON")
}

/// The row as JSON bytes, ready to send. Large parts of the record pass through as raw
/// JSON, and absent columns are omitted rather than sent as null.
#[cfg(any(test, feature = "sim"))]
pub fn row_bytes(data_type: DataType, record: &Record, observed: Option<i64>) -> Vec<u8> {
    row_bytes_for(data_type, record, observed, &TenantColumns::NONE)
}

/// [`row_bytes`] for a tenant's record: the row carries its tenant's columns.
pub(crate) fn row_bytes_for(
    data_type: DataType,
    record: &Record,
    observed: Option<i64>,
    tenant: &TenantColumns,
) -> Vec<u8> {
    // Sized once: a row is the record plus its mapped columns, and growing the buffer by
    // doubling from serde_json's default would copy each row several times.
    let mut out = Vec::with_capacity(record.text().len() * 5 / 4 + 512);
    match data_type {
        DataType::Alerts => {
            let row = alerts::map(record, observed);
            write_row(&mut out, &row, tenant, &row.source_record)
        }
        DataType::Activities => {
            let row = activities::map(record);
            write_row(&mut out, &row, tenant, &row.source_record)
        }
        DataType::Discovery => {
            let row = discovery::map(record);
            write_row(&mut out, &row, tenant, &row.source_record)
        }
    }
    out
}

/// Serializes `row` and adds `SourceRecord` as its last member. serde_json can only
/// embed raw JSON that it has validated (a second scan of every record), so the record's
/// text, already validated when the batch was read, is appended by hand.
fn write_row<R: serde::Serialize>(
    out: &mut Vec<u8>,
    row: &R,
    tenant: &TenantColumns,
    source: &record::SourceText,
) {
    serde_json::to_writer(&mut *out, row).expect("row structs always serialize");
    debug_assert_eq!(out.last(), Some(&b'}'));
    out.pop();
    if out.len() > 1 {
        out.push(b',');
    }
    out.extend_from_slice(&tenant.0);
    out.push(b'"');
    out.extend_from_slice(SOURCE_RECORD.as_bytes());
    out.extend_from_slice(b"\":");
    source.write_to(out);
    out.push(b'}');
}

/// Notes what a mapping could not fill, for the `MappingIssues` column.
#[derive(Default)]
pub(crate) struct Issues(Vec<String>);

impl Issues {
    pub(crate) fn note(&mut self, what: impl Into<String>) {
        self.0.push(what.into());
    }

    pub(crate) fn into_column(self) -> Option<String> {
        if self.0.is_empty() {
            None
        } else {
            Some(self.0.join("; "))
        }
    }

    /// A string field; notes it when missing and required.
    pub(crate) fn str(&mut self, rec: &Record, pointer: &str, required: bool) -> Option<String> {
        match rec.pointer(pointer) {
            Some(Value::String(s)) => Some(s),
            Some(Value::Number(n)) => Some(n.to_string()),
            None | Some(Value::Null) => {
                if required {
                    self.note(format!("{pointer} missing"));
                }
                None
            }
            Some(other) => {
                self.note(format!("{pointer} is not a string ({})", type_name(&other)));
                None
            }
        }
    }

    /// An integer field; notes it when present with the wrong type.
    pub(crate) fn int(&mut self, rec: &Record, pointer: &str) -> Option<i64> {
        match rec.pointer(pointer) {
            Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
            None | Some(Value::Null) => None,
            Some(other) => {
                self.note(format!("{pointer} is not a number ({})", type_name(&other)));
                None
            }
        }
    }

    /// A boolean field; notes a value of another type.
    pub(crate) fn boolean(&mut self, rec: &Record, pointer: &str) -> Option<bool> {
        match rec.pointer(pointer) {
            Some(Value::Bool(b)) => Some(b),
            None | Some(Value::Null) => None,
            Some(other) => {
                self.note(format!(
                    "{pointer} is not a boolean ({})",
                    type_name(&other)
                ));
                None
            }
        }
    }

    /// An RFC 3339 time field (as Graph writes them), normalized to UTC.
    pub(crate) fn datetime(&mut self, rec: &Record, pointer: &str) -> Option<String> {
        use time::format_description::well_known::Rfc3339;
        match rec.pointer(pointer) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match time::OffsetDateTime::parse(&s, &Rfc3339) {
                Ok(t) => Some(format_ms(crate::model::unix_ms(t))),
                Err(_) => {
                    self.note(format!("{pointer} is not an RFC 3339 time ({s:?})"));
                    None
                }
            },
            Some(other) => {
                self.note(format!("{pointer} is not a time ({})", type_name(&other)));
                None
            }
        }
    }

    /// A Unix-ms time field as RFC 3339.
    pub(crate) fn time(&mut self, rec: &Record, pointer: &str, required: bool) -> Option<String> {
        match self.int(rec, pointer) {
            Some(ms) => Some(format_ms(ms)),
            None => {
                if required && rec.pointer(pointer).is_none() {
                    self.note(format!("{pointer} missing"));
                }
                None
            }
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `TimeGenerated` must be a valid datetime: the record's own time, or the time of
/// ingestion when the record has none (and the row says so).
pub(crate) fn time_generated(from_record: Option<String>, issues: &mut Issues) -> String {
    from_record.unwrap_or_else(|| {
        issues.note("TimeGenerated set to ingestion time");
        format_ms(crate::model::now_ms())
    })
}

#[cfg(feature = "sim")]
/// Checks a row against its table's stream declaration, as the Logs Ingestion service
/// does: known columns, matching types, a valid
/// `TimeGenerated`.
pub(crate) fn validate_row(data_type: DataType, row: &Value) -> Result<(), String> {
    validate_columns(columns(data_type), row)
}

#[cfg(feature = "sim")]
/// Checks a row against a stream declaration's columns: each key declared, each value of
/// its column's type, and a `TimeGenerated`.
pub(crate) fn validate_columns(cols: &[Column], row: &Value) -> Result<(), String> {
    let obj = row.as_object().ok_or("a row must be a JSON object")?;
    for (k, v) in obj {
        let ty = cols
            .iter()
            .find(|c| c.name == k)
            .map(|c| c.ty)
            .ok_or_else(|| format!("column {k} is not in the stream declaration"))?;
        let ok = match ty {
            ColumnType::String => v.is_string(),
            ColumnType::DateTime => v.as_str().is_some_and(|s| {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .is_ok()
            }),
            ColumnType::Int | ColumnType::Long => v.is_i64() || v.is_u64(),
            ColumnType::Boolean => v.is_boolean(),
            ColumnType::Dynamic => true,
        };
        if !ok {
            return Err(format!("column {k} expects {}, got {v}", ty.as_str()));
        }
    }
    if !obj.contains_key("TimeGenerated") {
        return Err("TimeGenerated is missing".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row a mapping produces passes the stream declaration and carries the CAS
    /// record.
    pub(crate) fn assert_row_matches_columns(data_type: DataType, row: &Value) {
        if let Err(why) = validate_row(data_type, row) {
            panic!("{why}: {row}");
        }
        assert!(row.get("SourceRecord").is_some(), "SourceRecord missing");
    }

    #[test]
    fn column_names_fit_log_analytics_rules() {
        for dt in DataType::ALL {
            for Column { name, .. } in columns(dt) {
                assert!(
                    name.len() <= 45
                        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn garbage_records_still_become_rows_that_say_what_is_wrong() {
        for dt in DataType::ALL {
            let row = to_row(dt, &serde_json::json!({"timestamp": "yesterday", "_id": 5}));
            assert_row_matches_columns(dt, &row);
            assert!(
                row["MappingIssues"].as_str().is_some_and(|s| !s.is_empty()),
                "{dt}: {row}"
            );
            assert_eq!(row["SourceRecord"]["timestamp"], "yesterday");
        }
    }
}
