//! Rendering a realistic role tree: every file of our cluster and single-node templates (plus generated service
//! configurations to exceed 20 files and 20 KB), with nested object variables. `cargo bench -p pryv-render`.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Bench code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use indexmap::IndexMap;
use pryv_render::{PlatformFile, Renderer, Vars};
use serde_json::{Value, json};

fn templates() -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates");
    let mut files = Vec::new();
    walk(&root.join("cluster/data"), &mut files);
    walk(&root.join("single-node/data"), &mut files);
    for i in 0..10 {
        let body = format!(
            "{{\"service\": \"svc{i}\", \"domain\": \"DOMAIN\", \"api\": \"https://api{i}.DOMAIN/\", \"hostings\": HOSTINGS_AND_CORES, \
             \"mail\": {{\"host\": \"MAIL_SMTP_HOST\", \"port\": MAIL_SMTP_PORT}}, \"trusted\": TRUSTED_AUTH_URLS, \"padding\": \"{}\"}}",
            "lorem ipsum DOMAIN ".repeat(40)
        );
        files.push((format!("generated/svc{i}/conf/svc.json"), body.into_bytes()));
    }
    files
}

fn vars() -> Vars {
    let platform = PlatformFile::parse(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates/cluster/platform.yml"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut map: IndexMap<String, Value> = IndexMap::new();
    for name in [
        "CORE_SYSTEM_KEY",
        "REGISTER_SYSTEM_KEY",
        "MAIL_SYSTEM_KEY",
        "REDIS_PASSWORD",
    ] {
        map.insert(name.into(), json!("0123456789abcdefghijABCDEFGHIJ01"));
    }
    let mut all: IndexMap<String, Value> = IndexMap::new();
    for (_, name, value) in platform.settings() {
        let value = if value.as_str() == Some("REPLACE_ME") {
            json!(format!("{}-value", name.to_lowercase()))
        } else {
            value.clone()
        };
        all.insert(name.to_owned(), value);
    }
    all.insert("DOMAIN".into(), json!("pryv.example.com"));
    let hostings: serde_json::Map<String, Value> = (1..=2)
        .map(|h| {
            let cores: serde_json::Map<String, Value> = (1..=5)
                .map(|c| {
                    (
                        format!("co{h}{c}"),
                        json!({"ip": format!("10.0.{h}.{c}"), "name": "core on DOMAIN"}),
                    )
                })
                .collect();
            (format!("hosting{h}"), Value::Object(cores))
        })
        .collect();
    all.insert("HOSTINGS_AND_CORES".into(), Value::Object(hostings));
    all.insert(
        "TRUSTED_AUTH_URLS".into(),
        json!(["https://sw.DOMAIN/access", "https://*.DOMAIN"]),
    );
    all.extend(map);
    Vars::from_map(all)
}

fn bench(c: &mut Criterion) {
    let files = templates();
    let bytes: usize = files.iter().map(|(_, b)| b.len()).sum();
    let vars = vars();
    let mut group = c.benchmark_group("render");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(
        format!("tree of {} files, {} bytes", files.len(), bytes),
        |b| {
            let renderer = Renderer::new(&vars).unwrap();
            b.iter(|| {
                for (path, content) in &files {
                    black_box(renderer.render_file(path, content.clone()).unwrap());
                }
            });
        },
    );
    group.bench_function(format!("build renderer of {} variables", vars.len()), |b| {
        b.iter(|| black_box(Renderer::new(&vars).unwrap()));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
