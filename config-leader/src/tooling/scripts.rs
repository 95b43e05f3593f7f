//! The scripts of the install guide, as each machine's archive carries them (`run-config-follower`, `run-pryv`,
//! `ensure-permissions-<role>`, `watch-config`, ...), and the compose files they start. Generated text: one
//! shape for every compose script, so they all find their folder, check their file and choose the compose tool
//! the same way.

/// The compose files (the image tag is this build's version).
const FOLLOWER_COMPOSE: &str = include_str!("../../../docker/config-follower.yml");
const LEADER_COMPOSE: &str = include_str!("../../../docker/config-leader.yml");
/// The systemd units, for machines without Docker.
pub const FOLLOWER_UNIT: &str = include_str!("../../../docker/systemd/config-follower.service");
pub const LEADER_UNIT: &str = include_str!("../../../docker/systemd/config-leader.service");

/// The uid and gid the Pryv.io service images run as (written at the top of `ensure-permissions-<role>`).
pub const SERVICE_UID: u32 = 9999;
/// The uid our leader image runs as (see `docker/config-leader.Dockerfile`).
pub const LEADER_UID: u32 = 10001;

/// One file of an archive: path relative to `PRYV_CONF_ROOT`, content, mode.
pub struct InstallFile {
    pub path: String,
    pub text: String,
    pub mode: u32,
}

fn compose_file(template: &str) -> String {
    template.replace(":VERSION\"", &format!(":{}\"", env!("CARGO_PKG_VERSION")))
}

/// The start of every script: strict mode, `PRYV_CONF_ROOT` (default: the script's folder), the compose tool.
fn header(what: &str) -> String {
    format!(
        r#"#!/usr/bin/env bash
# {what}
# PRYV_CONF_ROOT defaults to the folder of this script; set it to run the script from elsewhere.
set -euo pipefail
PRYV_CONF_ROOT="${{PRYV_CONF_ROOT:-$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)}}"
export PRYV_CONF_ROOT
me="$(basename "$0")"

# `docker compose` (the plugin) when it answers, else docker-compose, as the follower itself does.
compose() {{
  if docker compose version >/dev/null 2>&1; then
    docker compose "$@"
  elif command -v docker-compose >/dev/null 2>&1; then
    docker-compose "$@"
  else
    echo "$me: neither 'docker compose' nor 'docker-compose' is installed; install Docker Compose" >&2
    exit 1
  fi
}}
"#
    )
}

/// A script running `compose -p <project> -f <file> <args>` after checking the file exists.
fn compose_script(
    name: &str,
    what: &str,
    project: &str,
    file: &str,
    args: &str,
    missing_hint: &str,
) -> InstallFile {
    let text = format!(
        r#"{header}
file="$PRYV_CONF_ROOT/{file}"
if [ ! -f "$file" ]; then
  echo "$me: $file not found; {missing_hint}" >&2
  exit 1
fi
echo "$me: {what} (compose project {project}, $file)"
compose -p {project} -f "$file" {args}
"#,
        header = header(what),
    );
    InstallFile {
        path: name.to_owned(),
        text,
        mode: 0o755,
    }
}

/// The three scripts (run, stop, restart) of one compose project.
fn lifecycle(component: &str, project: &str, file: &str, missing_hint: &str) -> Vec<InstallFile> {
    [
        ("run", "start", "up -d"),
        ("stop", "stop", "down"),
        ("restart", "restart", "restart"),
    ]
    .into_iter()
    .map(|(verb, doing, args)| {
        compose_script(
            &format!("{verb}-{component}"),
            &format!("{doing} {component}"),
            project,
            file,
            args,
            missing_hint,
        )
    })
    .collect()
}

/// Every file a machine's archive carries besides its configuration: scripts, compose files, systemd units.
/// `owned` lists the folders (relative to `PRYV_CONF_ROOT`) the role's containers write.
pub fn machine_files(role: &str, runs_leader: bool, owned: &[String]) -> Vec<InstallFile> {
    let unpack_hint = "unpack this machine's archive in PRYV_CONF_ROOT first";
    let mut files = vec![
        InstallFile {
            path: "config-follower/config-follower.yml".into(),
            text: compose_file(FOLLOWER_COMPOSE),
            mode: 0o644,
        },
        InstallFile {
            path: "systemd/config-follower.service".into(),
            text: FOLLOWER_UNIT.to_owned(),
            mode: 0o644,
        },
        ensure_permissions(role, runs_leader, owned),
        watch_config(),
    ];
    files.extend(lifecycle(
        "config-follower",
        "config-follower",
        "config-follower/config-follower.yml",
        unpack_hint,
    ));
    files.extend(lifecycle(
        "pryv",
        "pryv",
        "pryv/pryv.yml",
        "the follower has not written this machine's configuration yet: run ./run-config-follower and check its log",
    ));
    if runs_leader {
        files.push(InstallFile {
            path: "config-leader/config-leader.yml".into(),
            text: compose_file(LEADER_COMPOSE),
            mode: 0o644,
        });
        files.push(InstallFile {
            path: "systemd/config-leader.service".into(),
            text: LEADER_UNIT.to_owned(),
            mode: 0o644,
        });
        files.extend(lifecycle(
            "config-leader",
            "config-leader",
            "config-leader/config-leader.yml",
            unpack_hint,
        ));
    }
    files
}

fn ensure_permissions(role: &str, runs_leader: bool, owned: &[String]) -> InstallFile {
    let folders: String = owned.iter().map(|f| format!("  \"{f}\"\n")).collect();
    let leader = if runs_leader {
        format!(
            r#"# The leader's folder (its database and logs), for the leader image's user.
LEADER_UID="${{LEADER_UID:-{LEADER_UID}}}"
run mkdir -p "$PRYV_CONF_ROOT/config-leader/database" "$PRYV_CONF_ROOT/config-leader/log"
run chown -R "$LEADER_UID:$LEADER_UID" "$PRYV_CONF_ROOT/config-leader"
"#
        )
    } else {
        String::new()
    };
    let text = format!(
        r#"{header}
# The uid and gid the Pryv.io images run as (their "app" user); change them, or set them in the environment,
# if your images use another.
PRYV_UID="${{PRYV_UID:-{SERVICE_UID}}}"
PRYV_GID="${{PRYV_GID:-{SERVICE_UID}}}"

dry_run=0
if [ "${{1:-}}" = "--dry-run" ]; then dry_run=1; fi
run() {{
  if [ "$dry_run" = 1 ]; then echo "$*"; else "$@"; fi
}}
if [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
  echo "$me: run it as root (sudo ./$me), or with --dry-run to see what it would do" >&2
  exit 1
fi

echo "$me: giving $PRYV_UID:$PRYV_GID the data and log folders of the {role} machine's containers"
folders=(
{folders})
for folder in "${{folders[@]}}"; do
  run mkdir -p "$PRYV_CONF_ROOT/$folder"
  run chown -R "$PRYV_UID:$PRYV_GID" "$PRYV_CONF_ROOT/$folder"
done
# The follower runs as root in its container (it drives Docker); its folder stays root's and private.
run mkdir -p "$PRYV_CONF_ROOT/config-follower" "$PRYV_CONF_ROOT/pryv"
run chown -R 0:0 "$PRYV_CONF_ROOT/config-follower"
run chmod 0700 "$PRYV_CONF_ROOT/config-follower/conf"
{leader}echo "$me: done"
"#,
        header = header(&format!(
            "Sets the owners of the folders the {role} machine's containers write. Run as root after unpacking."
        )),
    );
    InstallFile {
        path: format!("ensure-permissions-{role}"),
        text,
        mode: 0o755,
    }
}

fn watch_config() -> InstallFile {
    let text = format!(
        r#"{header}
usage="usage: $me --no-hup (restart services when their files under pryv/*/conf/ change) | --stop-watch"
case "${{1:-}}" in
  --no-hup) enabled=true ;;
  --stop-watch) enabled=false ;;
  *) echo "$usage" >&2; exit 2 ;;
esac

# The follower watches pryv/*/conf/ itself; this switches that watcher (the choice is kept across restarts).
config="$PRYV_CONF_ROOT/config-follower/conf/config-follower.json"
if [ ! -f "$config" ]; then
  echo "$me: $config not found; unpack this machine's archive in PRYV_CONF_ROOT first" >&2
  exit 1
fi
key="$(grep -o '"auth"[[:space:]]*:[[:space:]]*"[^"]*"' "$config" | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/')"
port="$(grep -o '"port"[[:space:]]*:[[:space:]]*"\{{0,1\}}[0-9]*' "$config" | head -n 1 | grep -o '[0-9]*$')"
scheme=http
if grep -q '"certFile"' "$config"; then scheme=https; fi
url="${{FOLLOWER_URL:-$scheme://127.0.0.1:${{port:-6000}}}}"
if ! answer="$(curl -fsS -k -X PUT "$url/watch" -H "authorization: $key" -H 'content-type: application/json' \
    -d "{{\"enabled\": $enabled}}")"; then
  echo "$me: the follower at $url did not answer; start it first: ./run-config-follower" >&2
  exit 1
fi
if [ "$enabled" = true ]; then
  echo "$me: the follower now restarts a service when one of its files under pryv/*/conf/ changes ($answer)"
else
  echo "$me: the follower no longer watches pryv/*/conf/ ($answer)"
fi
"#,
        header = header(
            "Turns on (--no-hup) or off (--stop-watch) the automatic restart of services whose configuration files change."
        )
    );
    InstallFile {
        path: "watch-config".into(),
        text,
        mode: 0o755,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_is_strict_bash_and_the_compose_files_carry_this_version() {
        let files = machine_files("core", false, &["pryv/core/data".into()]);
        let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        for expected in [
            "run-config-follower",
            "stop-config-follower",
            "restart-config-follower",
            "run-pryv",
            "stop-pryv",
            "restart-pryv",
            "ensure-permissions-core",
            "watch-config",
            "config-follower/config-follower.yml",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        assert!(!names.contains(&"run-config-leader"));
        for file in files.iter().filter(|f| f.mode == 0o755) {
            assert!(
                file.text.starts_with("#!/usr/bin/env bash\n"),
                "{}",
                file.path
            );
            assert!(file.text.contains("set -euo pipefail"), "{}", file.path);
        }
        let compose = &files[0].text;
        assert!(compose.contains(&format!("/config-follower:{}\"", env!("CARGO_PKG_VERSION"))));
        let leader = machine_files("reg-master", true, &[]);
        assert!(leader.iter().any(|f| f.path == "run-config-leader"));
    }
}
