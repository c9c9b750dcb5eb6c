//! Checks a tool call's arguments against the JSON Schema derived from the tool's Rust
//! type, before anything runs, and says in the model's terms what is wrong: the path,
//! what was expected and what came. It covers what `schemars` emits for the tools'
//! argument types: objects with required and closed property sets, strings, integers
//! and numbers with bounds, arrays, enums, nullable types and `$ref` into `$defs`.

use serde_json::{Map, Value};

/// Every problem found, each naming the argument's path (`$.limit`).
pub fn check(schema: &Value, value: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    walk(schema, schema, value, "$", &mut problems);
    problems
}

/// The schema the model sees: without the meta-schema URI and title, which only cost
/// tokens.
pub fn for_model(mut schema: Value) -> Value {
    if let Some(object) = schema.as_object_mut() {
        object.remove("$schema");
        object.remove("title");
    }
    schema
}

fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => reference
            .strip_prefix("#/")
            .and_then(|path| path.split('/').try_fold(root, |at, part| at.get(part)))
            .unwrap_or(schema),
        None => schema,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(expected: &str, value: &Value) -> bool {
    let actual = type_name(value);
    actual == expected || (expected == "number" && actual == "integer")
}

fn walk(root: &Value, schema: &Value, value: &Value, path: &str, problems: &mut Vec<String>) {
    let schema = resolve(root, schema);
    if let Some(options) =
        schema.get("anyOf").or_else(|| schema.get("oneOf")).and_then(Value::as_array)
    {
        let fits = options.iter().any(|option| {
            let mut inner = Vec::new();
            walk(root, option, value, path, &mut inner);
            inner.is_empty()
        });
        if !fits {
            problems.push(format!("{path}: {} fits none of the allowed forms", type_name(value)));
        }
        return;
    }
    match schema.get("type") {
        Some(Value::String(expected)) if !type_matches(expected, value) => {
            problems.push(format!("{path}: expected {expected}, got {}", type_name(value)));
            return;
        }
        Some(Value::Array(allowed))
            if !allowed.iter().filter_map(Value::as_str).any(|t| type_matches(t, value)) =>
        {
            let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
            problems.push(format!(
                "{path}: expected {}, got {}",
                names.join(" or "),
                type_name(value)
            ));
            return;
        }
        _ => {}
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let names: Vec<String> = allowed.iter().map(Value::to_string).collect();
        problems.push(format!("{path}: {value} is not one of {}", names.join(", ")));
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        problems.push(format!("{path}: must be {constant}"));
    }
    match value {
        Value::Object(fields) => object(root, schema, fields, path, problems),
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (idx, item) in items.iter().enumerate() {
                    walk(root, item_schema, item, &format!("{path}[{idx}]"), problems);
                }
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                problems.push(format!("{path}: at most {max} items, got {}", items.len()));
            }
        }
        Value::String(text) => {
            let chars = text.chars().count() as u64;
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && chars > max
            {
                problems.push(format!("{path}: at most {max} characters, got {chars}"));
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && chars < min
            {
                problems.push(format!("{path}: at least {min} characters, got {chars}"));
            }
        }
        Value::Number(number) => {
            let n = number.as_f64().unwrap_or(f64::NAN);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                problems.push(format!("{path}: {number} is below the minimum {min}"));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                problems.push(format!("{path}: {number} is above the maximum {max}"));
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

fn object(
    root: &Value,
    schema: &Value,
    fields: &Map<String, Value>,
    path: &str,
    problems: &mut Vec<String>,
) {
    let properties = schema.get("properties").and_then(Value::as_object);
    for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
        if let Some(name) = required.as_str()
            && !fields.contains_key(name)
        {
            problems.push(format!("{path}: missing required argument `{name}`"));
        }
    }
    let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
    for (name, value) in fields {
        match properties.and_then(|p| p.get(name)) {
            Some(property) => walk(root, property, value, &format!("{path}.{name}"), problems),
            None if closed => {
                let known: Vec<&str> =
                    properties.map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
                problems.push(format!(
                    "{path}: unknown argument `{name}` (known: {})",
                    known.join(", ")
                ));
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use schemars::JsonSchema;
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "only the schema is used")]
    struct Args {
        query: String,
        #[schemars(range(min = 1, max = 200))]
        limit: Option<u32>,
        mode: Option<Mode>,
    }

    #[derive(Deserialize, JsonSchema)]
    #[serde(rename_all = "snake_case")]
    #[allow(dead_code, reason = "only the schema is used")]
    enum Mode {
        Sparse,
        Hybrid,
    }

    fn schema() -> Value {
        serde_json::to_value(schemars::schema_for!(Args)).unwrap()
    }

    #[test]
    fn a_good_call_passes() {
        assert!(check(&schema(), &json!({"query": "x", "limit": 5, "mode": "hybrid"})).is_empty());
        assert!(check(&schema(), &json!({"query": "x", "limit": null})).is_empty());
    }

    #[test]
    fn each_kind_of_mistake_is_named_with_its_path() {
        let problems = check(&schema(), &json!({"limit": 500, "mode": "dense", "verbose": true}));
        let text = problems.join("\n");
        assert!(text.contains("missing required argument `query`"), "{text}");
        assert!(text.contains("$.limit: 500 is above the maximum 200"), "{text}");
        assert!(text.contains("$.mode"), "{text}");
        assert!(text.contains("unknown argument `verbose`"), "{text}");
        let wrong_type = check(&schema(), &json!({"query": 7}));
        assert_eq!(wrong_type, vec!["$.query: expected string, got integer".to_string()]);
    }

    #[test]
    fn the_model_sees_no_meta_schema() {
        let shown = for_model(schema());
        assert!(shown.get("$schema").is_none() && shown.get("title").is_none());
        assert_eq!(shown["type"], "object");
    }
}
