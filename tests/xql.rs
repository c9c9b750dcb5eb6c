//! XQL parsing, printing and validation against real queries and our own.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use std::path::PathBuf;

use pivotwatch::xql::{self, Schema, ValidationOptions};

/// The queries of the shared research notes, when they sit beside the project.
fn example_queries() -> Option<Vec<(String, String)>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/research/xql_examples.md");
    let text = std::fs::read_to_string(&path).ok()?;
    let mut out = Vec::new();
    let mut heading = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.starts_with('#') {
            heading = line.trim_start_matches('#').trim().to_string();
        }
        if line.trim() == "```xql" {
            let mut body = Vec::new();
            for inner in lines.by_ref() {
                if inner.trim() == "```" {
                    break;
                }
                body.push(inner);
            }
            out.push((heading.clone(), body.join("\n")));
        }
    }
    Some(out)
}

#[test]
fn every_runnable_published_query_parses_and_prints_to_a_fixed_point() {
    let Some(queries) = example_queries() else {
        eprintln!("skipped: ../shared/research/xql_examples.md is not beside the project");
        return;
    };
    assert!(queries.len() >= 25, "found only {} queries", queries.len());
    let mut parsed = 0;
    for (heading, text) in &queries {
        // Placeholders and elided field lists are not runnable XQL.
        if text.contains('$') && text.contains("($") || text.contains(", ... ,") {
            eprintln!("skipped (not runnable as written): {heading}");
            continue;
        }
        let query = xql::parse(text).unwrap_or_else(|err| panic!("{heading}: {err}\n{text}"));
        let printed = query.to_string();
        let again =
            xql::parse(&printed).unwrap_or_else(|err| panic!("{heading}: {err}\n{printed}"));
        assert_eq!(query, again, "{heading}: the printed form parses to another tree:\n{printed}");
        assert_eq!(printed, again.to_string(), "{heading}: printing is not a fixed point");
        parsed += 1;
    }
    assert!(parsed >= 25, "only {parsed} queries parsed");
}

fn schema() -> Schema {
    Schema::from_json(
        r#"{"datasets": {
            "xdr_data": {"_time": "timestamp", "event_type": "string", "action_local_ip": "ip",
                         "action_remote_ip": "ip", "action_remote_port": "int",
                         "action_total_upload": "int", "agent_hostname": "string"},
            "asset_inventory": ["xdm.asset.id", "xdm.asset.ipv4_addresses", "xdm.asset.type.name"]
        }}"#,
    )
    .unwrap()
}

fn check_with(text: &str, schema: Option<&Schema>) -> xql::Validation {
    let options = ValidationOptions {
        schema,
        caller_timeframe: false,
        require_timeframe: schema.is_some(),
        call_allow_list: &["iot_baseline".to_string()],
    };
    xql::validate::check(text, &options).1
}

fn messages(v: &xql::Validation) -> Vec<String> {
    v.errors.iter().map(|d| format!("{}:{} {}", d.line, d.column, d.message)).collect()
}

#[test]
fn syntax_errors_point_at_the_place_and_suggest_a_fix() {
    let err = xql::parse("dataset = xdr_data\n| fitler action_remote_port = 22").unwrap_err();
    assert_eq!((err.line, err.column), (2, 3));
    assert_eq!(err.message, "unknown stage `fitler`; did you mean `filter`?");

    let err = xql::parse("dataset = xdr_data | filter (a = 1").unwrap_err();
    assert!(err.message.contains("expected `)`"), "{err}");

    let err = xql::parse("dataset = xdr_data | filter a = 1 b = 2").unwrap_err();
    assert!(err.message.contains("stages are separated by `|`"), "{err}");
    assert_eq!(err.column, 35);

    let err = xql::parse("dataset = xdr_data | comp a by b").unwrap_err();
    assert!(err.message.contains("aggregate calls"), "{err}");

    let err = xql::parse("").unwrap_err();
    assert_eq!(err.message, "the query is empty");

    let err = xql::parse("dataset = xdr_data | limit -3").unwrap_err();
    assert!(err.message.contains("row count"), "{err}");
}

#[test]
fn printing_is_canonical_and_keeps_meaning() {
    let text = "DATASET=xdr_data|FILTER NOT (a=1 OR b!=2) AND c IN(\"x\",'y') and d not contains \"z\"\n\
                | alter e = (a + b) * 2, f = -a, g = a - -1 | SORT DESC e, f asc | fields `by` as k";
    let printed = xql::format(text).unwrap();
    assert_eq!(
        printed,
        "dataset = xdr_data\n\
         | filter not (a = 1 or b != 2) and c in (\"x\", \"y\") and d not contains \"z\"\n\
         | alter e = (a + b) * 2, f = -a, g = a - -1\n\
         | sort desc e, asc f\n\
         | fields `by` as k"
    );
    assert_eq!(xql::format(&printed).unwrap(), printed);
    // A backslash before anything but a quote or another backslash stays single.
    assert_eq!(xql::format(r#"filter a ~= ".*\$""#).unwrap(), r#"filter a ~= ".*\$""#);
    assert_eq!(xql::format(r#"filter a = "say \"hi\"""#).unwrap(), r#"filter a = "say \"hi\"""#);
}

#[test]
fn writing_stages_are_refused_wherever_they_hide() {
    let v = check_with(
        "dataset = xdr_data | fields a | target type = lookup append = true iot_copy",
        None,
    );
    assert!(!v.read_only && !v.valid);
    assert!(messages(&v)[0].contains("writes results"), "{:?}", messages(&v));

    // Inside a join's subquery too.
    let v = check_with(
        "dataset = xdr_data | join (dataset = xdr_data | target type = dataset out) as j j.a = a",
        None,
    );
    assert!(!v.read_only, "{:?}", messages(&v));

    let v = check_with("dataset = xdr_data | call exfil_helper", None);
    assert!(!v.read_only);
    assert!(messages(&v)[0].contains("allow-list"));
    let v = check_with("config timeframe = 1d | dataset = xdr_data | call IOT_BASELINE", None);
    assert!(v.read_only && v.valid, "{:?}", messages(&v));
}

#[test]
fn order_and_timeframe_rules() {
    let v = check_with("dataset = xdr_data | config timeframe = 1d | limit 1", None);
    assert!(!v.valid);
    assert!(messages(&v)[0].contains("`config` must come before"));

    let v = check_with("dataset = xdr_data | limit 1 | dataset = endpoints", None);
    assert!(messages(&v)[0].contains("must be the first stage"), "{:?}", messages(&v));

    // Without a schema a missing timeframe is a warning, with one it is an error.
    let v = check_with("dataset = whatever_dataset | limit 1", None);
    assert!(v.valid && v.warnings.iter().any(|w| w.message.contains("timeframe")));
    let s = schema();
    let v = check_with("dataset = xdr_data | limit 1", Some(&s));
    assert!(!v.valid && messages(&v)[0].contains("timeframe"));

    let v = check_with("config timeframe = yesterday | dataset = xdr_data", None);
    assert!(messages(&v)[0].contains("takes a duration"), "{:?}", messages(&v));
}

#[test]
fn schema_checks_name_the_nearest_dataset_and_field() {
    let s = schema();
    let v = check_with("config timeframe = 1d | dataset = xdr_dta | limit 1", Some(&s));
    assert_eq!(messages(&v), ["1:35 unknown dataset `xdr_dta`; did you mean `xdr_data`?"]);

    let v = check_with(
        "config timeframe = 1d | dataset = xdr_data | filter action_remote_prot = 22",
        Some(&s),
    );
    assert_eq!(
        messages(&v),
        ["1:53 unknown field `action_remote_prot`; did you mean `action_remote_port`?"]
    );

    // Fields follow the pipeline: alter adds, comp replaces, enum values are not fields.
    let ok = "config timeframe = 1d | dataset = xdr_data | filter event_type = STORY \
              | alter kb = divide(action_total_upload, 1024) | filter kb > 10 \
              | comp sum(kb) as total_kb by action_local_ip | sort desc total_kb";
    let v = check_with(ok, Some(&s));
    assert!(v.valid, "{:?}", messages(&v));
    let dropped = "config timeframe = 1d | dataset = xdr_data \
                   | comp count() as n by action_local_ip | filter action_remote_port = 22";
    let v = check_with(dropped, Some(&s));
    assert!(messages(&v)[0].contains("unknown field `action_remote_port`"), "{:?}", messages(&v));

    // A join brings in the other side's fields, and its alias in the condition.
    let join = "config timeframe = 1d | dataset = xdr_data \
                | join (dataset = asset_inventory | fields xdm.asset.ipv4_addresses, xdm.asset.type.name) \
                  as a a.xdm.asset.ipv4_addresses = action_local_ip \
                | comp count() as n by xdm.asset.type.name";
    let v = check_with(join, Some(&s));
    assert!(v.valid, "{:?}", messages(&v));
    let v = check_with(&join.replace("a.xdm.asset.ipv4", "a.xdm.asset.ipv6"), Some(&s));
    assert!(
        messages(&v)[0].contains("did you mean `a.xdm.asset.ipv4_addresses`"),
        "{:?}",
        messages(&v)
    );

    // A function outside the catalogue is a warning with a suggestion.
    let v = check_with(
        "config timeframe = 1d | dataset = xdr_data | alter x = lowercse(agent_hostname)",
        Some(&s),
    );
    assert!(v.valid);
    assert!(v.warnings[0].message.contains("did you mean `lowercase`"), "{:?}", v.warnings);
}

#[test]
fn validation_json_has_the_documented_shape() {
    let v = check_with("dataset = xdr_data | target type = dataset x", None);
    let json: serde_json::Value = serde_json::to_value(&v).unwrap();
    let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["errors", "read_only", "valid", "warnings"]);
    assert_eq!(json["errors"][0]["line"], 1);
    assert_eq!(json["errors"][0]["column"], 22);
}

#[test]
#[ignore = "prints the canonical form of every example, for reading"]
fn print_examples() {
    for (heading, text) in example_queries().unwrap_or_default() {
        if let Ok(q) = xql::parse(&text) {
            println!("== {heading}\n{q}\n");
        }
    }
}

#[test]
fn an_extract_time_part_the_engine_does_not_compute_is_refused_by_name() {
    let dir = tempfile::TempDir::new().unwrap();
    let flows = dir.path().join("conn.log");
    std::fs::write(
        &flows,
        "{\"ts\":1773023400.0,\"id.orig_h\":\"10.0.0.1\",\"id.orig_p\":50000,\
         \"id.resp_h\":\"10.0.0.2\",\"id.resp_p\":443,\"proto\":\"tcp\"}\n",
    )
    .unwrap();
    pivotwatch::xdr::replay::Replay::load(dir.path(), None, std::slice::from_ref(&flows)).unwrap();
    let replay = pivotwatch::xdr::replay::Replay::open(dir.path()).unwrap();
    let err = replay
        .query("dataset = xdr_data | alter w = extract_time(_time, \"WEEK\")", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("WEEK") && err.contains("DAYOFWEEK"), "{err}");
    let ok = replay.query("dataset = xdr_data | alter h = extract_time(_time, \"hour\")", None);
    assert!(ok.is_ok(), "{ok:?}");
}
