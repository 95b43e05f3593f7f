//! A fault-injecting TCP proxy: forwards loopback connections to a target until it is cut, then drops every
//! open connection and every new one until healed; or freezes the open ones (silent, still open). Placed between a leader replica and each etcd member, it
//! partitions that replica from the store while the others keep it.
// Test code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    /// Connections numbered below this one are frozen: open, but what they carry is dropped.
    frozen_below: Arc<AtomicU64>,
    next: Arc<AtomicU64>,
}

impl Proxy {
    /// Listens on a loopback port and forwards to `target`.
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let frozen_below = Arc::new(AtomicU64::new(0));
        let next = Arc::new(AtomicU64::new(0));
        let (is_cut, streams) = (cut.clone(), open.clone());
        let (frozen, numbers) = (frozen_below.clone(), next.clone());
        std::thread::spawn(move || {
            for incoming in listener.incoming() {
                let Ok(client) = incoming else { continue };
                if is_cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let mut kept = streams.lock().unwrap();
                kept.push(client.try_clone().unwrap());
                kept.push(server.try_clone().unwrap());
                drop(kept);
                let number = numbers.fetch_add(1, Ordering::SeqCst);
                let gate = Gate {
                    number,
                    frozen_below: frozen.clone(),
                };
                pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    gate.clone(),
                );
                pipe(server, client, gate);
            }
        });
        Self {
            port,
            cut,
            open,
            frozen_below,
            next,
        }
    }

    /// Makes every open connection silent (what it carries is dropped, it stays open: a half-open
    /// connection no error reports); new connections work.
    pub fn freeze(&self) {
        self.frozen_below
            .store(self.next.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// The proxy's URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Drops every open connection and refuses new ones (accepted, then closed at once).
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Forwards again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Whether one connection is frozen.
#[derive(Clone)]
struct Gate {
    number: u64,
    frozen_below: Arc<AtomicU64>,
}

fn pipe(mut from: TcpStream, mut to: TcpStream, gate: Gate) {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            let read = match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            if gate.number < gate.frozen_below.load(Ordering::SeqCst) {
                continue;
            }
            if to.write_all(&buffer[..read]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
