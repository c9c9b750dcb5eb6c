//! The deployment files: every `PIVOTWATCH_*` variable they set is a setting the code
//! reads, every credential comes from a secret rather than the file, the probes hit
//! routes the server has, the image runs as a non-root user, and the YAML parses (with
//! Python's yaml module where it is installed; the test says when it is not).

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use std::collections::BTreeSet;
use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// Every Rust source file's text.
fn sources() -> String {
    let mut text = String::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                text.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
    }
    text
}

fn variables(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (idx, _) in text.match_indices("PIVOTWATCH_") {
        let name: String = text[idx..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        out.insert(name);
    }
    out
}

const FILES: [&str; 4] = [
    "deploy/Dockerfile",
    "deploy/compose.yaml",
    "deploy/k8s/server.yaml",
    "deploy/k8s/detect-cronjob.yaml",
];

#[test]
fn every_variable_the_deployment_sets_is_read_by_the_code() {
    let code = sources();
    for file in FILES {
        for variable in variables(&read(file)) {
            let setting =
                pivotwatch::server::config::setting_name(&variable["PIVOTWATCH_".len()..]);
            assert!(
                code.contains(&format!("\"{setting}\""))
                    || code.contains(&format!("\"{variable}\"")),
                "{file}: {variable} ({setting}) is not a setting pivotwatch reads"
            );
        }
    }
}

#[test]
fn credentials_come_from_secrets_and_probes_hit_real_routes() {
    let k8s = read("deploy/k8s/server.yaml");
    for credential in [
        "PIVOTWATCH_DATABASE_URL",
        "PIVOTWATCH_WEBHOOKS_XDR_SECRET",
        "PIVOTWATCH_XDR_API_KEY",
        "PIVOTWATCH_LLM_API_KEY",
        "PIVOTWATCH_SLACK_BOT_TOKEN",
    ] {
        let at =
            k8s.find(&format!("name: {credential}\n")).unwrap_or_else(|| panic!("{credential}"));
        assert!(k8s[at..].lines().nth(1).unwrap().contains("secretKeyRef"), "{credential}");
    }
    assert!(k8s.contains("replicas: 2"));
    let router = read("src/server/mod.rs");
    for path in ["/readyz", "/healthz"] {
        assert!(k8s.contains(&format!("path: {path}")), "{path}");
        assert!(router.contains(&format!(".route(\"{path}\"")), "{path}");
    }
    let compose = read("deploy/compose.yaml");
    assert!(!compose.contains("PASSWORD: pivotwatch") && compose.contains("${POSTGRES_PASSWORD:?"));
    let dockerfile = read("deploy/Dockerfile");
    assert!(dockerfile.contains("USER 10001") && dockerfile.matches("FROM ").count() == 2);
    // The files the crate embeds at build time are not excluded from the build context.
    let ignored = read(".dockerignore");
    for needed in ["prompts", "tools", "knowledge", "evals", "benches"] {
        assert!(!ignored.lines().any(|l| l.trim() == needed), "{needed}");
    }
}

#[test]
fn the_yaml_parses() {
    let probe = std::process::Command::new("python3").args(["-c", "import yaml"]).status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("the_yaml_parses: skipped: python3 with the yaml module is not installed");
        return;
    }
    for file in FILES.iter().filter(|f| f.ends_with(".yaml")) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let out = std::process::Command::new("python3")
            .args(["-c", "import sys, yaml; docs = list(yaml.safe_load_all(open(sys.argv[1]))); print(len(docs))"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
