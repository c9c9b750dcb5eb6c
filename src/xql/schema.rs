//! What a tenant holds: its datasets and the fields of each, so the validator can name
//! a mistyped dataset or field before a query costs quota.
//!
//! A schema file is JSON: `{"datasets": {"xdr_data": {"_time": "timestamp", ...}}}`;
//! a dataset may also list its fields as an array of names when their types do not
//! matter.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The type a field holds, as far as the validator and executor need to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    Int,
    Float,
    Bool,
    Timestamp,
    Ip,
    Array,
    Json,
    Any,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Schema {
    pub datasets: BTreeMap<String, BTreeMap<String, FieldType>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchema {
    datasets: BTreeMap<String, RawFields>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawFields {
    Typed(BTreeMap<String, FieldType>),
    Names(Vec<String>),
}

impl Schema {
    pub fn from_json(text: &str) -> Result<Schema, String> {
        let raw: RawSchema = serde_json::from_str(text).map_err(|err| {
            format!(
                "not a schema ({err}); expected {{\"datasets\": {{\"name\": {{\"field\": \
                 \"string\", ...}}}}}} or field names as an array"
            )
        })?;
        let datasets = raw
            .datasets
            .into_iter()
            .map(|(name, fields)| {
                let fields = match fields {
                    RawFields::Typed(fields) => fields,
                    RawFields::Names(names) => {
                        names.into_iter().map(|name| (name, FieldType::Any)).collect()
                    }
                };
                (name, fields)
            })
            .collect();
        Ok(Schema { datasets })
    }

    pub fn read(path: &Path) -> Result<Schema, String> {
        let text =
            std::fs::read_to_string(path).map_err(|err| format!("{}: {err}", path.display()))?;
        Schema::from_json(&text).map_err(|err| format!("{}: {err}", path.display()))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into())
    }

    pub fn dataset(&self, name: &str) -> Option<&BTreeMap<String, FieldType>> {
        self.datasets.get(name).or_else(|| {
            self.datasets.iter().find(|(known, _)| known.eq_ignore_ascii_case(name)).map(|(_, f)| f)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_typed_and_listed_fields_and_explains_a_bad_file() {
        let schema = Schema::from_json(
            r#"{"datasets": {"xdr_data": {"_time": "timestamp"}, "endpoints": ["endpoint_name"]}}"#,
        )
        .unwrap();
        assert_eq!(schema.dataset("XDR_DATA").unwrap()["_time"], FieldType::Timestamp);
        assert_eq!(schema.dataset("endpoints").unwrap()["endpoint_name"], FieldType::Any);
        let err = Schema::from_json(r#"{"tables": {}}"#).unwrap_err();
        assert!(err.contains("expected"), "{err}");
    }
}
