//! Benchmarks of the release daemons, results printed as Markdown for BENCHMARKS.md:
//!   cargo build --release -p config-leader -p config-follower && cargo run --release -p pryv-e2e --bin pryv-bench
//! Sections: leader cold start and memory, `GET /conf` throughput and latency at 1/16/64 connections (and the
//! same bytes served by nginx as a ceiling, when nginx is installed), fleet convergence for 100/1000/5000
//! simulated followers (also spread over 10 zones, with the renders counted), 5000 followers long-polling at once,
//! follower memory idle and under notifications.
//! `--quick` shortens every run; `--fleet-only`, `--long-poll-only`, `--wrk-only` (wrk against nginx; the
//! leader's log level from `PRYV_BENCH_LOG`, default `info`), `--start-only` (cold starts) and `--store-only`
//! (settings saves and `GET /conf` on SQLite and on an etcd replica) run one section.
//! `PRYV_BENCH_FLEET=1000,10000` chooses the fleet sizes, `PRYV_BENCH_NOTIFY_CONCURRENCY` the leader's
//! `notify.concurrency` (default 64).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
// Test and tool code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use config_follower::apply::{OwnWrites, RemovalGuard, apply};
use pryv_protocol::ConfResponse;
use serde_json::{Value, json};

fn release_bin(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/release")
        .join(name);
    assert!(
        path.exists(),
        "{} missing: run cargo build --release -p config-leader -p config-follower",
        path.display()
    );
    path
}

/// Resident memory (current, peak) of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A child process stopped with SIGTERM (so nginx takes its workers along), then reaped.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

use pryv_e2e::free_port;

/// A cluster laid out by `init` with realistic values; returns the leader configuration path.
fn platform(root: &Path, followers: Option<(usize, &str)>) -> PathBuf {
    platform_in_zones(root, followers, 0)
}

/// Like [`platform`], with `zones` zones (`z0`...) each overriding the SMTP host the core tree uses, and the
/// followers spread over them in turn.
fn platform_in_zones(root: &Path, followers: Option<(usize, &str)>, zones: usize) -> PathBuf {
    let out = Command::new(release_bin("config-leader"))
        .args([
            "init",
            "--topology",
            "cluster",
            "--cores",
            "2",
            "--reg-slave",
            "--force",
            "--out",
        ])
        .arg(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Grow the core tree to the size of a production one (~20 files, ~19 KB): service configurations that use
    // nested object variables.
    for i in 0..12 {
        let body = format!(
            "{{\"service\": \"svc{i}\", \"domain\": \"DOMAIN\", \"api\": \"https://api{i}.DOMAIN/\", \"hostings\": HOSTINGS_AND_CORES,\n \
             \"mail\": {{\"host\": \"MAIL_SMTP_HOST\", \"port\": MAIL_SMTP_PORT}}, \"notes\": \"{}\"}}\n",
            "served by the platform at DOMAIN; ".repeat(35)
        );
        let path = root.join(format!("config-leader/data/core/svc{i}/conf/svc.json"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    let platform_path = root.join("config-leader/conf/platform.yml");
    let text = std::fs::read_to_string(&platform_path).unwrap();
    let mut filled = String::new();
    let mut last_name = String::new();
    for line in text.lines() {
        if let Some(name) = line.trim().strip_suffix(':') {
            last_name = name.to_owned();
        }
        let value = match last_name.as_str() {
            "DOMAIN" => "pryv.example.com".to_owned(),
            n if n.ends_with("IP_ADDRESS") => "192.0.2.10".to_owned(),
            n => format!("bench-{}", n.to_lowercase()),
        };
        filled.push_str(&line.replace("REPLACE_ME", &value));
        filled.push('\n');
    }
    if zones > 0 {
        filled.push_str("zones:\n");
        for zone in 0..zones {
            filled.push_str(&format!(
                "  z{zone}:\n    vars:\n      EMAIL_SETTINGS:\n        settings:\n          MAIL_SMTP_HOST:\n            value: smtp.z{zone}.example.com\n"
            ));
        }
    }
    std::fs::write(&platform_path, filled).unwrap();
    let config_path = root.join("config-leader/conf/config-leader.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["adminKey"] = json!("bench-admin-key-0123456789abcdef");
    if let Some(concurrency) = std::env::var("PRYV_BENCH_NOTIFY_CONCURRENCY")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        config["notify"] = json!({"concurrency": concurrency});
    }
    if let Some((count, base_url)) = followers {
        let map: serde_json::Map<String, Value> = (0..count)
            .map(|i| {
                let mut entry = json!({"url": format!("{base_url}/f/{i}"), "role": "core"});
                if zones > 0 {
                    entry["zone"] = json!(format!("z{}", i % zones));
                }
                (follower_key(i), entry)
            })
            .collect();
        config["followers"] = Value::Object(map);
    }
    std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    config_path
}

fn follower_key(i: usize) -> String {
    format!("bench-follower-key-{i:08}-abcdefghij")
}

fn core_key(config_path: &Path) -> String {
    let config: Value = serde_json::from_slice(&std::fs::read(config_path).unwrap()).unwrap();
    config["followers"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, f)| f["role"] == "core")
        .map(|(k, _)| k.clone())
        .unwrap()
}

fn start_leader(config: &Path, port: u16) -> (Proc, Duration, String, u32) {
    start_leader_logging(config, port, "warn")
}

/// [`start_leader`] at log level `level` (`info`: the default, one line per request).
fn start_leader_logging(config: &Path, port: u16, level: &str) -> (Proc, Duration, String, u32) {
    let started = Instant::now();
    let child = Command::new(release_bin("config-leader"))
        .arg("--config")
        .arg(config)
        .args(["--ip", "127.0.0.1", "--port", &port.to_string()])
        .env("RUST_LOG", level)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let key = core_key(config);
    let url = format!("http://127.0.0.1:{port}/conf");
    // Cold start: until the first successful GET /conf.
    loop {
        if probe(&url, &key) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "leader did not start"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    (Proc(child), started.elapsed(), key, pid)
}

/// A tiny synchronous GET for the cold-start probe (plain TCP, no runtime involved): true on a 200.
fn probe(url: &str, key: &str) -> bool {
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap();
    let Ok(mut stream) = std::net::TcpStream::connect(host) else {
        return false;
    };
    let request = format!(
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {key}\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer.starts_with(b"HTTP/1.1 200")
}

struct Load {
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `connections` tasks, each with its own keep-alive connection, GET `url` for `duration`.
async fn load(url: &str, key: &str, connections: usize, duration: Duration) -> Load {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let url = url.to_owned();
        let key = key.to_owned();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let started = Instant::now();
                let response = client
                    .get(&url)
                    .header("authorization", &key)
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
                let _ = response.bytes().await.unwrap();
                latencies.push(started.elapsed().as_micros() as u64);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    let pick = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)] as f64 / 1000.0;
    Load {
        requests_per_s: all.len() as f64 / duration.as_secs_f64(),
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
    }
}

fn start_nginx(root: &Path, body: &[u8]) -> Option<(Proc, u16)> {
    if Command::new("nginx")
        .arg("-v")
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        return None;
    }
    let port = free_port();
    let dir = root.join("nginx");
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/conf"), body).unwrap();
    let conf = format!(
        "worker_processes auto; daemon off; error_log stderr crit; pid {dir}/nginx.pid;\n\
         events {{ worker_connections 1024; }}\n\
         http {{ access_log off; default_type application/json; sendfile on; keepalive_requests 100000;\n\
           client_body_temp_path {dir}/tmp; proxy_temp_path {dir}/tmp; fastcgi_temp_path {dir}/tmp; uwsgi_temp_path {dir}/tmp; scgi_temp_path {dir}/tmp;\n\
           server {{ listen 127.0.0.1:{port}; root {dir}/www; }} }}\n",
        dir = dir.display()
    );
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new("nginx")
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Some((Proc(child), port))
}

async fn conf_section(seconds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let config = platform(dir.path(), None);
    let port = free_port();
    let cold = cold_starts(&config, port, 5);
    let (_leader, _, key, pid) = start_leader(&config, port);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (idle_rss, _) = memory(pid);
    let url = format!("http://127.0.0.1:{port}/conf");
    let body = fetch_body(&url, &key).await;
    let files = serde_json::from_slice::<ConfResponse>(&body)
        .unwrap()
        .files
        .len();
    println!("## Leader: start, memory, `GET /conf`\n");
    println!(
        "Role `core` of the cluster template: {files} files, {} bytes of JSON per answer.\n",
        body.len()
    );
    println!("{cold}");
    println!("- resident memory idle: {idle_rss:.1} MiB\n");
    println!("| server | connections | requests/s | p50 ms | p99 ms |\n|---|---|---|---|---|");
    for connections in [1, 16, 64] {
        let result = load(&url, &key, connections, Duration::from_secs(seconds)).await;
        println!(
            "| config-leader | {connections} | {:.0} | {:.2} | {:.2} |",
            result.requests_per_s, result.p50_ms, result.p99_ms
        );
    }
    let scrape = scraped_load(port, &url, &key, Duration::from_secs(seconds)).await;
    let (rss, peak) = memory(pid);
    match start_nginx(dir.path(), &body) {
        Some((_nginx, nginx_port)) => {
            let url = format!("http://127.0.0.1:{nginx_port}/conf");
            for connections in [1, 16, 64] {
                let result = load(&url, &key, connections, Duration::from_secs(seconds)).await;
                println!(
                    "| nginx (same bytes, static file) | {connections} | {:.0} | {:.2} | {:.2} |",
                    result.requests_per_s, result.p50_ms, result.p99_ms
                );
            }
        }
        None => println!("| nginx | — | not installed: no ceiling measured | | |"),
    }
    println!("\n- leader resident memory after the load: {rss:.1} MiB (peak {peak:.1} MiB)\n");
    println!("{scrape}");
}

/// `GET /conf` at 16 connections while `/metrics` is scraped every 100 ms (150 times Prometheus' usual pace):
/// the line for BENCHMARKS.md.
async fn scraped_load(port: u16, url: &str, key: &str, duration: Duration) -> String {
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut times = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                let text = client
                    .get(&metrics_url)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                assert!(text.contains("pryv_config_leader_http_requests_total"));
                times.push(started.elapsed());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            times
        })
    };
    let result = load(url, key, 16, duration).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut times = scraper.await.unwrap();
    times.sort();
    let median = times.get(times.len() / 2).copied().unwrap_or_default();
    format!(
        "- `GET /conf` at 16 connections while `/metrics` is scraped every 100 ms: {:.0} requests/s, p50 {:.2} ms, \
         p99 {:.2} ms; {} scrapes, median {:.2} ms each\n",
        result.requests_per_s,
        result.p50_ms,
        result.p99_ms,
        times.len(),
        median.as_secs_f64() * 1000.0
    )
}

#[derive(Clone)]
struct Simulated {
    leader: String,
    root: PathBuf,
    client: reqwest::Client,
    fetched: Arc<Mutex<HashMap<usize, Instant>>>,
    done: Arc<Mutex<HashMap<usize, Instant>>>,
}

async fn simulated_notify(
    State(sim): State<Simulated>,
    UrlPath(index): UrlPath<usize>,
) -> axum::Json<Value> {
    let response = sim
        .client
        .get(format!("{}/conf", sim.leader))
        .header("authorization", follower_key(index))
        .send()
        .await
        .unwrap();
    let tree: ConfResponse = response.json().await.unwrap();
    sim.fetched.lock().unwrap().insert(index, Instant::now());
    let folder = sim.root.join(format!("f{index}"));
    let applied = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&folder).unwrap();
        apply(
            &folder,
            &tree.files,
            &Default::default(),
            &OwnWrites::default(),
            RemovalGuard::OFF,
            &|_, _| Ok(()),
        )
        .unwrap()
    })
    .await
    .unwrap();
    sim.done.lock().unwrap().insert(index, Instant::now());
    axum::Json(json!({"files": applied.report.files}))
}

/// The core renders the leader made so far (`pryv_config_leader_renders_total`, role core, ok).
async fn core_renders(leader_url: &str) -> u64 {
    let text = reqwest::get(format!("{leader_url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("pryv_config_leader_renders_total{")
                && l.contains("role=\"core\"")
                && l.contains("outcome=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn fleet_section(counts: &[usize], zones: usize) {
    if zones > 0 {
        println!("## Fleet convergence, followers in {zones} zones\n");
        println!(
            "The same, with the core followers spread over {zones} zones that each override the SMTP host the core tree uses: {zones} variants of one role. `renders` counts the core renders the notification caused (`pryv_config_leader_renders_total`): one per variant, whatever the number of followers.\n"
        );
    } else {
        println!("## Fleet convergence\n");
    }
    println!(
        "Simulated followers speak the real protocol in one process: each `POST /notify` makes it `GET /conf` with its own key and write the tree with the follower's own `apply` (atomic writes) into its own folder, then answer.\n"
    );
    println!(
        "Their folders are on tmpfs (`/dev/shm`) when it exists: real followers write on their own machines' disks in parallel, while here thousands share one disk, whose fsyncs would measure the disk, not the leader.\n"
    );
    println!(
        "| followers | variants | renders | notify → last follower fetched | notify → last follower written | leader peak memory |\n|---|---|---|---|---|---|"
    );
    for &count in counts {
        let dir = tempfile::tempdir().unwrap();
        let shm = Path::new("/dev/shm");
        let follower_dir = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim_addr: SocketAddr = sim_listener.local_addr().unwrap();
        let config = platform_in_zones(
            dir.path(),
            Some((count, &format!("http://{sim_addr}"))),
            zones,
        );
        let port = free_port();
        let leader_url = format!("http://127.0.0.1:{port}");
        let (_leader, _, _, pid) = start_leader(&config, port);
        let renders_before = core_renders(&leader_url).await;
        let sim = Simulated {
            leader: leader_url.clone(),
            root: follower_dir.path().to_owned(),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()
                .unwrap(),
            fetched: Arc::new(Mutex::new(HashMap::new())),
            done: Arc::new(Mutex::new(HashMap::new())),
        };
        let app = Router::new()
            .route("/f/{index}/notify", axum::routing::post(simulated_notify))
            .with_state(sim.clone());
        let server = tokio::spawn(async move { axum::serve(sim_listener, app).await });
        let started = Instant::now();
        let answer: Value = reqwest::Client::new()
            .post(format!("{leader_url}/admin/notify"))
            .header("authorization", "bench-admin-key-0123456789abcdef")
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let failures = answer["failures"].as_array().map_or(0, Vec::len);
        let done = sim.done.lock().unwrap().clone();
        let last = done
            .values()
            .max()
            .map_or(Duration::ZERO, |t| t.duration_since(started));
        let fetched = sim
            .fetched
            .lock()
            .unwrap()
            .values()
            .max()
            .map_or(Duration::ZERO, |t| t.duration_since(started));
        let (_, peak) = memory(pid);
        let renders = core_renders(&leader_url).await - renders_before;
        println!(
            "| {count} | {} | {renders} | {:.0} ms | {:.0} ms ({} written, {failures} failures) | {peak:.1} MiB |",
            zones.max(1),
            fetched.as_secs_f64() * 1000.0,
            last.as_secs_f64() * 1000.0,
            done.len()
        );
        server.abort();
    }
    println!();
}

/// `count` followers waiting at once on `GET /conf?wait=` (one connection each): leader memory while they
/// wait, and the time from a settings change to the last of them answered with the new tree.
async fn long_poll_section(count: usize) {
    let dir = tempfile::tempdir().unwrap();
    let config = platform(dir.path(), Some((count, "http://127.0.0.1:1")));
    let port = free_port();
    let (_leader, _, _, pid) = start_leader(&config, port);
    let base = format!("http://127.0.0.1:{port}");
    let revision = reqwest::Client::new()
        .get(format!("{base}/conf"))
        .header("authorization", follower_key(0))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["revision"]
        .as_str()
        .unwrap()
        .to_owned();
    let (idle, _) = memory(pid);
    let (tasks, waiting) = park_waiters(count, &base, &revision);
    // Every request in flight and parked at the leader.
    while waiting.load(std::sync::atomic::Ordering::SeqCst) < count {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (parked, _) = memory(pid);
    let started = Instant::now();
    let answer = reqwest::Client::new()
        .put(format!("{base}/admin/settings"))
        .header("authorization", "bench-admin-key-0123456789abcdef")
        .json(&json!({"settings": {"MACHINES_AND_PLATFORM_SETTINGS": {"settings": {"DOMAIN": {"value": "pryv.changed.example"}}}}}))
        .send()
        .await
        .unwrap();
    assert!(
        answer.status().is_success(),
        "{}",
        answer.text().await.unwrap_or_default()
    );
    let mut last = started;
    let mut released = 0;
    for task in tasks {
        let (status, new_revision, at) = task.await.unwrap();
        if status == 200 && new_revision.as_deref() != Some(revision.as_str()) {
            released += 1;
        }
        last = last.max(at);
    }
    let (_, peak) = memory(pid);
    println!("## Long-poll\n");
    println!(
        "{count} followers wait on `GET /conf?wait=<revision>&timeout=25`, one connection each; then a `PUT /admin/settings` changes DOMAIN.\n"
    );
    println!(
        "| waiting | leader memory before → while waiting (peak) | settings saved → last follower answered | answered with the new tree |\n|---|---|---|---|"
    );
    println!(
        "| {count} | {idle:.1} → {parked:.1} MiB (peak {peak:.1}) | {:.0} ms | {released} |\n",
        last.duration_since(started).as_secs_f64() * 1000.0
    );
}

/// What a waiting follower saw: status, revision of the answer, when it came.
type Waiter = tokio::task::JoinHandle<(u16, Option<String>, Instant)>;

/// `count` long-polls on `revision`, one client each; the counter says how many are in flight.
fn park_waiters(
    count: usize,
    base: &str,
    revision: &str,
) -> (Vec<Waiter>, Arc<std::sync::atomic::AtomicUsize>) {
    let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..count {
        let url = format!("{base}/conf?wait={revision}&timeout=25");
        let waiting = waiting.clone();
        let revision = revision.to_owned();
        tasks.push(tokio::spawn(async move {
            // One client each: every follower is its own machine with its own connection.
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            let request = client
                .get(&url)
                .header("authorization", follower_key(i))
                .header("if-none-match", format!("\"{revision}\""))
                .send();
            waiting.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let response = request.await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (
                status,
                body["revision"].as_str().map(str::to_owned),
                Instant::now(),
            )
        }));
    }
    (tasks, waiting)
}

async fn follower_section(seconds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let config = platform(dir.path(), None);
    let port = free_port();
    let (_leader, _, _, _) = start_leader(&config, port);
    let follower_config = dir
        .path()
        .join("machines/core-1/config-follower/conf/config-follower.json");
    let follower_port = free_port();
    let child = Command::new(release_bin("config-follower"))
        .arg("--config")
        .arg(&follower_config)
        .env(
            "CONFIG_FOLLOWER_LEADER_URL",
            format!("http://127.0.0.1:{port}"),
        )
        .env("CONFIG_FOLLOWER_HTTP_IP", "127.0.0.1")
        .env("CONFIG_FOLLOWER_HTTP_PORT", follower_port.to_string())
        .env("CONFIG_FOLLOWER_RESTART_COMMAND", "true")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _follower = Proc(child);
    while std::net::TcpStream::connect(("127.0.0.1", follower_port)).is_err() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (idle, _) = memory(pid);
    let follower: Value =
        serde_json::from_slice(&std::fs::read(&follower_config).unwrap()).unwrap();
    let key = follower["leader"]["auth"].as_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut notifications = 0;
    while Instant::now() < deadline {
        let response = client
            .post(format!("http://127.0.0.1:{follower_port}/notify"))
            .header("authorization", &key)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        notifications += 1;
    }
    let (rss, peak) = memory(pid);
    println!("## Follower memory\n");
    println!("- idle after its first fetch: {idle:.1} MiB resident");
    println!(
        "- after {notifications} notifications in {seconds} s (fetch, compare, write): {rss:.1} MiB resident, peak {peak:.1} MiB\n"
    );
}

/// `runs` cold starts to the first successful `GET /conf`, as the line for BENCHMARKS.md.
fn cold_starts(config: &Path, port: u16, runs: usize) -> String {
    let mut cold: Vec<Duration> = (0..runs).map(|_| start_leader(config, port).1).collect();
    cold.sort();
    format!(
        "- cold start to the first successful `GET /conf`: median {:.1} ms (min {:.1}, max {:.1}, {runs} runs)",
        cold[runs / 2].as_secs_f64() * 1000.0,
        cold[0].as_secs_f64() * 1000.0,
        cold[runs - 1].as_secs_f64() * 1000.0
    )
}

/// The body of one `GET /conf` with `key`.
async fn fetch_body(url: &str, key: &str) -> axum::body::Bytes {
    reqwest::Client::new()
        .get(url)
        .header("authorization", key)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
}

/// One wrk run: requests/s, p50 and p99 in ms.
struct Wrk {
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `wrk -t1 -c16 --latency` on `url` for `seconds`; with `pinned`, wrk runs on CPU 1 (the server on CPU 0).
fn wrk(url: &str, key: Option<&str>, seconds: u64, pinned: bool) -> Wrk {
    let mut command = if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "1", "wrk"]);
        c
    } else {
        Command::new("wrk")
    };
    command.args(["-t1", "-c16", &format!("-d{seconds}s"), "--latency"]);
    if let Some(key) = key {
        command.args(["-H", &format!("Authorization: {key}")]);
    }
    let out = command.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let ms = |value: &str| -> f64 {
        let value = value.trim();
        let (number, factor) = if let Some(n) = value.strip_suffix("us") {
            (n, 0.001)
        } else if let Some(n) = value.strip_suffix("ms") {
            (n, 1.0)
        } else if let Some(n) = value.strip_suffix('s') {
            (n, 1000.0)
        } else {
            (value, 1.0)
        };
        number.parse::<f64>().unwrap_or(f64::NAN) * factor
    };
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::to_owned))
            .unwrap_or_default()
    };
    Wrk {
        requests_per_s: field("Requests/sec:").trim().parse().unwrap_or(f64::NAN),
        p50_ms: ms(&field("50%")),
        p99_ms: ms(&field("99%")),
    }
}

/// Pins `pid` and every thread of it (and of its children: nginx's workers) to CPU 0.
fn pin_to_cpu0(pid: u32) {
    let mut pids = vec![pid.to_string()];
    if let Ok(out) = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
    {
        pids.extend(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned),
        );
    }
    for pid in pids {
        let _ = Command::new("taskset")
            .args(["-a", "-pc", "0", &pid])
            .stdout(Stdio::null())
            .status();
    }
}

/// `GET /conf` measured with wrk (1 thread, 16 connections) against the leader (request log at its default
/// level) and nginx serving the same bytes as a static file, in the same run: unpinned, then with each server
/// on CPU 0 and wrk on CPU 1.
async fn wrk_section(seconds: u64) {
    if Command::new("wrk").arg("--version").output().is_err() {
        println!(
            "## `GET /conf` with wrk\n\nwrk is not installed (`apt-get install wrk`): not measured.\n"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = platform(dir.path(), None);
    let port = free_port();
    let level = std::env::var("PRYV_BENCH_LOG").unwrap_or_else(|_| "info".to_owned());
    let (_leader, _, key, pid) = start_leader_logging(&config, port, &level);
    let url = format!("http://127.0.0.1:{port}/conf");
    let body = fetch_body(&url, &key).await;
    let Some((nginx, nginx_port)) = start_nginx(dir.path(), &body) else {
        println!("## `GET /conf` with wrk\n\nnginx is not installed: no reference.\n");
        return;
    };
    let nginx_url = format!("http://127.0.0.1:{nginx_port}/conf");
    println!(
        "## `GET /conf` with wrk (1 thread, 16 connections, {} bytes per answer)\n",
        body.len()
    );
    println!(
        "| placement | server | requests/s | p50 ms | p99 ms | vs nginx |\n|---|---|---|---|---|---|"
    );
    for pinned in [false, true] {
        if pinned {
            pin_to_cpu0(pid);
            pin_to_cpu0(nginx.0.id());
        }
        let placement = if pinned {
            "pinned (server CPU 0, wrk CPU 1)"
        } else {
            "unpinned"
        };
        let ours = wrk(&url, Some(&key), seconds, pinned);
        let theirs = wrk(&nginx_url, None, seconds, pinned);
        println!(
            "| {placement} | config-leader | {:.0} | {:.2} | {:.2} | {:.2}× throughput, {:.2}× p99 |",
            ours.requests_per_s,
            ours.p50_ms,
            ours.p99_ms,
            ours.requests_per_s / theirs.requests_per_s,
            ours.p99_ms / theirs.p99_ms
        );
        println!(
            "| {placement} | nginx | {:.0} | {:.2} | {:.2} | |",
            theirs.requests_per_s, theirs.p50_ms, theirs.p99_ms
        );
    }
    println!();
}

/// `count` settings saves in a row through `url` (each renders every role before it is recorded): saves per
/// second, p50 and p99 in ms.
async fn saves(url: &str, count: usize) -> (f64, f64, f64) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count {
        let one = Instant::now();
        let answer = client
            .put(format!("{url}/admin/settings"))
            .header("authorization", "bench-admin-key-0123456789abcdef")
            .json(&json!({"settings": {"EMAIL_SETTINGS": {"settings": {"MAIL_SMTP_HOST": {"value": format!("smtp-{i}.example.com")}}}}}))
            .send()
            .await
            .unwrap();
        assert!(
            answer.status().is_success(),
            "{}",
            answer.text().await.unwrap()
        );
        latencies.push(one.elapsed().as_secs_f64() * 1000.0);
    }
    let per_s = count as f64 / started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (per_s, pick(0.50), pick(0.99))
}

/// The same platform on one leader (SQLite) and on a replica of a 3-member etcd cluster (loopback): settings
/// saves, and `GET /conf` (wrk when installed, else the in-process generator).
async fn store_section(seconds: u64) {
    if !pryv_e2e::available("etcd", "--version") {
        println!(
            "## Settings store: SQLite and etcd\n\netcd is not installed (`apt-get install etcd-server`): not measured.\n"
        );
        return;
    }
    let cluster = pryv_e2e::etcd::EtcdCluster::start(3);
    println!(
        "## Settings store: one leader on SQLite, a replica on a 3-member etcd cluster (loopback)\n"
    );
    println!(
        "| store | settings saves/s | save p50 ms | save p99 ms | `GET /conf` requests/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|---|"
    );
    for etcd in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let config = platform(dir.path(), None);
        if etcd {
            let mut json: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
            json["store"] =
                json!({"etcd": {"endpoints": cluster.endpoints(), "prefix": "/pryv-bench/"}});
            std::fs::write(&config, json.to_string()).unwrap();
        }
        let port = free_port();
        let (_leader, _, key, _) = start_leader(&config, port);
        let base = format!("http://127.0.0.1:{port}");
        let (per_s, p50, p99) = saves(&base, 100).await;
        let url = format!("{base}/conf");
        let (requests, conf_p50, conf_p99) =
            if Command::new("wrk").arg("--version").output().is_ok() {
                let measured = wrk(&url, Some(&key), seconds, false);
                (measured.requests_per_s, measured.p50_ms, measured.p99_ms)
            } else {
                let measured = load(&url, &key, 16, Duration::from_secs(seconds)).await;
                (measured.requests_per_s, measured.p50_ms, measured.p99_ms)
            };
        println!(
            "| {} | {per_s:.0} | {p50:.2} | {p99:.2} | {requests:.0} | {conf_p50:.2} | {conf_p99:.2} |",
            if etcd { "etcd replica" } else { "SQLite" }
        );
    }
    println!();
}

#[tokio::main]
async fn main() {
    pryv_e2e::install_crypto();
    let quick = std::env::args().any(|a| a == "--quick");
    let seconds = if quick { 2 } else { 10 };
    let chosen: Option<Vec<usize>> = std::env::var("PRYV_BENCH_FLEET").ok().map(|list| {
        list.split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect()
    });
    let counts: &[usize] = match &chosen {
        Some(counts) => counts,
        None if quick => &[100, 1000],
        None => &[100, 1000, 5000],
    };
    println!(
        "# Benchmark run\n\nMachine: {} cores; release build; load generator in-process on the same machine.\n",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    if std::env::args().any(|a| a == "--long-poll-only") {
        let count = std::env::var("PRYV_BENCH_WAITING")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(if quick { 1000 } else { 5000 });
        long_poll_section(count).await;
        return;
    }
    if std::env::args().any(|a| a == "--start-only") {
        let dir = tempfile::tempdir().unwrap();
        let config = platform(dir.path(), None);
        let port = free_port();
        println!("{}", cold_starts(&config, port, 9));
        return;
    }
    if std::env::args().any(|a| a == "--store-only") {
        store_section(seconds).await;
        return;
    }
    if std::env::args().any(|a| a == "--wrk-only") {
        wrk_section(seconds).await;
        return;
    }
    let fleet_only = std::env::args().any(|a| a == "--fleet-only");
    if !fleet_only {
        conf_section(seconds).await;
        wrk_section(seconds).await;
        store_section(seconds).await;
    }
    fleet_section(counts, 0).await;
    fleet_section(counts, 10).await;
    long_poll_section(if quick { 1000 } else { 5000 }).await;
    if !fleet_only {
        follower_section(seconds.min(5)).await;
    }
}
