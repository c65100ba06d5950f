//! The deployment files agree with the binary: every `GATEWAY_*` / `REDIS_*` name in the
//! Dockerfile, `deploy/` and the Helm chart (`helm/redis-gateway/`) is an environment variable
//! of [`Config`]; the settings the image, the Compose files and the chart's defaults give are
//! accepted by the gateway's own parser and checks; the ports agree (the image's EXPOSE, its
//! GATEWAY_LISTEN, the Compose port mappings, the chart's ports); the image runs as a numeric
//! non-root user and refuses to serve beyond loopback without an auth file; the chart's grace
//! period outlasts its drain, with readiness the gRPC health check on the gRPC port; and the
//! image, the chart and the Compose files carry the crate's version.
//!
//! The files are read as text (a small indentation-based reader for the hand-written YAML
//! here, not a YAML parser): nothing is built, rendered or started, so neither Docker nor Helm
//! is needed. `scripts/lint-deploy.sh` checks the files' syntax and the chart's values.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, Parser};
use redis_gateway::config::Config;

/// The gRPC port the image and the chart use.
const GRPC_PORT: u16 = 50051;
/// The metrics port the image exposes and the chart uses.
const METRICS_PORT: u16 = 9464;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// Every file under `dir` (relative to the repository), recursively.
fn files_under(dir: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&root().join(dir), &mut found);
    found.sort();
    found
}

/// The gateway's environment variables, each with its flag (`GATEWAY_LISTEN` → `listen`).
fn config_env_flags() -> BTreeMap<String, String> {
    Config::command()
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_str()?.to_owned();
            Some((env, arg.get_long()?.to_owned()))
        })
        .collect()
}

/// The `GATEWAY_*` and `REDIS_*` names in `text`: whole words of capitals, digits and `_`.
/// A prefix alone (`GATEWAY_*`, ending in `_`) is not a name.
fn env_names(text: &str) -> BTreeSet<String> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = BTreeSet::new();
    for (start, _) in text.char_indices() {
        let rest = &text[start..];
        if !(rest.starts_with("GATEWAY_") || rest.starts_with("REDIS_")) {
            continue;
        }
        if text[..start].chars().next_back().is_some_and(is_word) {
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..end];
        // `GATEWAY_Xyz` is not a name either: the word goes on in lower case.
        if name.ends_with('_') || rest[end..].starts_with(is_word) {
            continue;
        }
        names.insert(name.to_owned());
    }
    names
}

/// Parses settings as the gateway would read them from its environment, each `NAME=value`
/// given as its flag (a test cannot safely set environment variables), then checks them.
/// `RUST_LOG`, the log filter, is parsed as the logging setup parses it.
fn config_from(settings: &[(String, String)]) -> Result<Config, String> {
    let flags = config_env_flags();
    let mut args = vec!["redis-gateway".to_owned()];
    for (name, value) in settings {
        if name == "RUST_LOG" {
            // The log filter, read by the logging setup rather than by Config.
            tracing_subscriber::EnvFilter::try_new(value)
                .map_err(|err| format!("RUST_LOG={value}: {err}"))?;
            continue;
        }
        let flag = flags
            .get(name)
            .ok_or_else(|| format!("{name} is not a setting of the gateway"))?;
        args.push(format!("--{flag}={value}"));
    }
    let config = Config::try_parse_from(&args).map_err(|err| format!("{args:?}: {err}"))?;
    config
        .validate()
        .map_err(|err| format!("{args:?}: {err}"))?;
    Ok(config)
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn is_content(line: &str) -> bool {
    let trimmed = line.trim_start();
    !trimmed.is_empty() && !trimmed.starts_with('#')
}

/// The indentation of a block's own entries: that of its first line with content.
fn child_indent(lines: &[&str]) -> usize {
    lines
        .iter()
        .find(|line| is_content(line))
        .map_or(0, |line| indent_of(line))
}

/// The lines of the value of `key` among the entries of `lines` (a block-style mapping).
fn block<'a>(lines: &[&'a str], key: &str) -> Vec<&'a str> {
    let indent = child_indent(lines);
    let start = lines
        .iter()
        .position(|line| {
            is_content(line)
                && indent_of(line) == indent
                && line
                    .trim_start()
                    .strip_prefix(key)
                    .is_some_and(|rest| rest.starts_with(':'))
        })
        .unwrap_or_else(|| {
            panic!(
                "no `{key}:` at indentation {indent} in:\n{}",
                lines.join("\n")
            )
        });
    lines[start + 1..]
        .iter()
        .take_while(|line| !is_content(line) || indent_of(line) > indent)
        .copied()
        .collect()
}

/// The lines of the value at `path` in a YAML text.
fn block_at<'a>(text: &'a str, path: &[&str]) -> Vec<&'a str> {
    let mut lines: Vec<&str> = text.lines().collect();
    for key in path {
        lines = block(&lines, key);
    }
    lines
}

/// A scalar without its quotes or trailing comment.
fn scalar(raw: &str) -> String {
    let raw = raw.trim();
    for quote in ['"', '\''] {
        if let Some(inner) = raw.strip_prefix(quote).and_then(|r| r.strip_suffix(quote)) {
            return inner.to_owned();
        }
    }
    raw.split(" #").next().unwrap_or(raw).trim().to_owned()
}

/// The `key: value` entries of a block (its own entries, not nested ones).
fn entries(lines: &[&str]) -> Vec<(String, String)> {
    let indent = child_indent(lines);
    lines
        .iter()
        .filter(|line| is_content(line) && indent_of(line) == indent)
        .filter_map(|line| {
            let (key, value) = line.trim().split_once(':')?;
            Some((key.trim().to_owned(), scalar(value)))
        })
        .collect()
}

/// The `- item` entries of a block sequence.
fn items(lines: &[&str]) -> Vec<String> {
    let indent = child_indent(lines);
    lines
        .iter()
        .filter(|line| is_content(line) && indent_of(line) == indent)
        .filter_map(|line| line.trim().strip_prefix("- ").map(scalar))
        .collect()
}

/// The value of `key` among a block's entries.
fn entry(lines: &[&str], key: &str) -> String {
    entries(lines)
        .into_iter()
        .find_map(|(name, value)| (name == key).then_some(value))
        .unwrap_or_else(|| panic!("no `{key}` in:\n{}", lines.join("\n")))
}

fn number<T: std::str::FromStr>(text: &str, what: &str) -> T {
    text.parse()
        .unwrap_or_else(|_| panic!("{what} is `{text}`, not a number"))
}

/// The Dockerfile's instructions: continuation lines joined, comments left out.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with('#') || (current.is_empty() && line.trim().is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                let (name, args) = current.trim().split_once(' ').unwrap_or((&current, ""));
                instructions.push((name.to_ascii_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    instructions
}

/// The runtime stage's instructions: those after the last FROM.
fn runtime_stage() -> Vec<(String, String)> {
    let instructions = dockerfile_instructions();
    let last_from = instructions
        .iter()
        .rposition(|(name, _)| name == "FROM")
        .expect("the Dockerfile has a FROM");
    instructions[last_from..].to_vec()
}

/// The image's environment (its ENV instructions, `NAME=value` pairs).
fn dockerfile_env() -> Vec<(String, String)> {
    runtime_stage()
        .into_iter()
        .filter(|(name, _)| name == "ENV")
        .flat_map(|(_, args)| {
            args.split_whitespace()
                .map(|pair| {
                    let (name, value) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("ENV `{pair}` is not NAME=value"));
                    (name.to_owned(), scalar(value))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

const COMPOSE_FILES: [&str; 2] = [
    "deploy/compose/docker-compose.yml",
    "deploy/compose/docker-compose.cluster.yml",
];

#[test]
fn every_variable_the_deployment_files_name_is_a_gateway_setting() {
    let known = config_env_flags();
    assert!(known.contains_key("GATEWAY_LISTEN") && known.contains_key("REDIS_URL"));
    let mut files = vec![root().join("Dockerfile")];
    files.extend(files_under("deploy"));
    files.extend(files_under("helm/redis-gateway"));
    let mut seen = BTreeSet::new();
    let mut unknown = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for name in env_names(&text) {
            if !known.contains_key(&name) {
                unknown.push(format!("{}: {name}", file.display()));
            }
            seen.insert(name);
        }
    }
    assert!(
        unknown.is_empty(),
        "names that are no setting of redis_gateway::config::Config:\n{}",
        unknown.join("\n")
    );
    // Not a vacuous pass: the files do name the settings they configure.
    for expected in [
        "GATEWAY_LISTEN",
        "GATEWAY_METRICS_LISTEN",
        "GATEWAY_DRAIN_TIMEOUT",
        "GATEWAY_AUTH",
        "GATEWAY_AUTH_FILE",
        "REDIS_URL",
        "REDIS_PASSWORD",
    ] {
        assert!(seen.contains(expected), "no file names {expected}");
    }
}

#[test]
fn the_name_scanner_finds_whole_names_only() {
    let names =
        env_names("GATEWAY_LISTEN=x `REDIS_URL` MY_REDIS_URL GATEWAY_* REDIS_TLS_CA\nGATEWAY_Xy");
    let expected: BTreeSet<String> = ["GATEWAY_LISTEN", "REDIS_URL", "REDIS_TLS_CA"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(names, expected);
}

#[test]
fn the_image_exposes_its_ports_runs_unprivileged_and_refuses_to_serve_without_auth() {
    let stage = runtime_stage();
    let exposed: BTreeSet<u16> = stage
        .iter()
        .filter(|(name, _)| name == "EXPOSE")
        .flat_map(|(_, args)| {
            args.split_whitespace()
                .map(|port| port.trim_end_matches("/tcp"))
        })
        .map(|port| number(port, "an EXPOSE port"))
        .collect();
    assert!(
        exposed.contains(&GRPC_PORT),
        "EXPOSE {exposed:?} lacks {GRPC_PORT}"
    );
    assert!(
        exposed.contains(&METRICS_PORT),
        "EXPOSE {exposed:?} lacks {METRICS_PORT}"
    );

    let env = dockerfile_env();
    assert!(
        env.iter().all(|(name, _)| name != "GATEWAY_AUTH"),
        "the image must not choose GATEWAY_AUTH (`none` would serve every key to anyone)"
    );
    let listen = &env
        .iter()
        .find(|(name, _)| name == "GATEWAY_LISTEN")
        .expect("the image sets GATEWAY_LISTEN")
        .1;
    let config = Config::try_parse_from(["redis-gateway", "--listen", listen]).unwrap();
    assert_eq!(config.listen.port(), GRPC_PORT, "GATEWAY_LISTEN={listen}");
    assert!(exposed.contains(&config.listen.port()));
    assert!(
        !config.listen.ip().is_loopback(),
        "the image must listen beyond the container"
    );

    // The image's settings alone: accepted by the parser, refused by the checks until an auth
    // file (or an explicit GATEWAY_AUTH=none) is given.
    let err = config_from(&env).unwrap_err();
    assert!(err.contains("GATEWAY_AUTH_FILE"), "{err}");
    let mut with_redis = env.clone();
    with_redis.push(("REDIS_URL".into(), "redis://redis:6379/0".into()));
    with_redis.push(("GATEWAY_AUTH".into(), "none".into()));
    let config = config_from(&with_redis).unwrap();
    assert!(
        config.metrics_listen.is_none(),
        "metrics stay off unless asked for"
    );

    let user = stage
        .iter()
        .rev()
        .find_map(|(name, args)| (name == "USER").then_some(args.clone()))
        .expect("the runtime stage sets USER");
    let uid: u32 = number(user.split(':').next().unwrap(), "the USER's UID");
    assert_ne!(uid, 0, "USER {user}");
    let values = read("helm/redis-gateway/values.yaml");
    let pod = block_at(&values, &["podSecurityContext"]);
    assert_eq!(number::<u32>(&entry(&pod, "runAsUser"), "runAsUser"), uid);
    assert_eq!(entry(&pod, "runAsNonRoot"), "true");
    let stop = stage.iter().find(|(name, _)| name == "STOPSIGNAL");
    assert_eq!(stop.map(|(_, signal)| signal.as_str()), Some("SIGTERM"));
}

#[test]
fn the_compose_files_configure_the_gateway_with_settings_it_accepts() {
    let image_env = dockerfile_env();
    for file in COMPOSE_FILES {
        let text = read(file);
        let gateway = block_at(&text, &["services", "gateway"]);
        let env = entries(&block(&gateway, "environment"));
        // The image's environment, then the service's on top (as Docker merges them).
        let mut settings: Vec<(String, String)> = image_env
            .iter()
            .filter(|(name, _)| env.iter().all(|(other, _)| other != name))
            .cloned()
            .collect();
        settings.extend(env.iter().cloned());
        let config = config_from(&settings).unwrap_or_else(|err| panic!("{file}: {err}"));

        // The published ports reach the container ports the gateway listens on; without
        // authentication they are published on the host's loopback address only.
        let metrics = config.metrics_listen.expect("metrics on in Compose");
        let mut container_ports = BTreeSet::new();
        for mapping in items(&block(&gateway, "ports")) {
            let parts: Vec<&str> = mapping.split(':').collect();
            let [host_ip, _, container] = parts[..] else {
                panic!("{file}: port mapping `{mapping}` is not host_ip:host_port:container_port");
            };
            if config.auth_file.is_none() {
                assert_eq!(
                    host_ip, "127.0.0.1",
                    "{file}: {mapping} without authentication"
                );
            }
            container_ports.insert(number::<u16>(container, "a container port"));
        }
        let expected: BTreeSet<u16> = [config.listen.port(), metrics.port()].into();
        assert_eq!(container_ports, expected, "{file}");
        assert_eq!(config.listen.port(), GRPC_PORT, "{file}");
        assert_eq!(metrics.port(), METRICS_PORT, "{file}");

        // A stop lets the drain finish before Docker's SIGKILL.
        let grace = entry(&gateway, "stop_grace_period");
        let grace = humantime::parse_duration(&grace).unwrap();
        assert!(
            grace > config.drain_timeout,
            "{file}: stop_grace_period {grace:?} <= GATEWAY_DRAIN_TIMEOUT {:?}",
            config.drain_timeout
        );
    }
}

/// The chart's default values that decide ports and timing.
struct ChartDefaults {
    grpc_port: u16,
    metrics_port: u16,
    service_port: u16,
    drain_seconds: u64,
    margin_seconds: u64,
    pre_stop_seconds: u64,
}

fn chart_defaults() -> ChartDefaults {
    let values = read("helm/redis-gateway/values.yaml");
    let top: Vec<&str> = values.lines().collect();
    let top_number = |key: &str| number::<u64>(&entry(&top, key), key);
    ChartDefaults {
        grpc_port: number(&entry(&top, "grpcPort"), "grpcPort"),
        metrics_port: number(&entry(&block(&top, "metrics"), "port"), "metrics.port"),
        service_port: number(&entry(&block(&top, "service"), "port"), "service.port"),
        drain_seconds: top_number("drainTimeoutSeconds"),
        margin_seconds: top_number("terminationGraceMarginSeconds"),
        pre_stop_seconds: top_number("preStopSleepSeconds"),
    }
}

#[test]
fn the_chart_grace_period_outlasts_the_drain() {
    let defaults = chart_defaults();
    let helpers = read("helm/redis-gateway/templates/_helpers.tpl");
    let deployment = read("helm/redis-gateway/templates/deployment.yaml");
    let configmap = read("helm/redis-gateway/templates/configmap.yaml");
    // The grace period is the helper's sum, and the drain the ConfigMap gives the gateway is
    // drainTimeoutSeconds.
    assert!(deployment.contains(
        "terminationGracePeriodSeconds: {{ include \"redis-gateway.terminationGracePeriodSeconds\" . }}"
    ));
    assert!(helpers.contains(
        "add (int .Values.preStopSleepSeconds) (int .Values.drainTimeoutSeconds) \
         (int .Values.terminationGraceMarginSeconds)"
    ));
    assert!(configmap.contains(
        "GATEWAY_DRAIN_TIMEOUT: {{ printf \"%ds\" (int .Values.drainTimeoutSeconds) | quote }}"
    ));
    let grace = defaults.pre_stop_seconds + defaults.drain_seconds + defaults.margin_seconds;
    let drain = config_from(&[(
        "GATEWAY_DRAIN_TIMEOUT".into(),
        format!("{}s", defaults.drain_seconds),
    )])
    .unwrap()
    .drain_timeout;
    assert_eq!(drain, Duration::from_secs(defaults.drain_seconds));
    assert!(
        Duration::from_secs(grace) > drain + Duration::from_secs(defaults.pre_stop_seconds),
        "terminationGracePeriodSeconds {grace} does not outlast the preStop sleep and the drain"
    );
    let binary_default = Config::try_parse_from(["redis-gateway"])
        .unwrap()
        .drain_timeout;
    assert!(
        Duration::from_secs(grace) > binary_default,
        "terminationGracePeriodSeconds {grace} <= the gateway's default drain {binary_default:?}"
    );
}

#[test]
fn the_chart_probes_use_grpc_on_the_grpc_port() {
    let defaults = chart_defaults();
    assert_eq!(defaults.grpc_port, GRPC_PORT);
    assert_eq!(defaults.metrics_port, METRICS_PORT);
    assert_eq!(defaults.service_port, GRPC_PORT);
    let deployment = read("helm/redis-gateway/templates/deployment.yaml");
    // The container port named `grpc` is grpcPort, which GATEWAY_LISTEN listens on.
    assert!(deployment.contains(
        "            - name: grpc\n              containerPort: {{ .Values.grpcPort }}\n"
    ));
    let configmap = read("helm/redis-gateway/templates/configmap.yaml");
    assert!(
        configmap
            .contains("GATEWAY_LISTEN: {{ printf \"0.0.0.0:%d\" (int .Values.grpcPort) | quote }}")
    );
    // Readiness (without TLS on the gRPC port, the default) is Kubernetes' gRPC probe of the
    // overall health service "" on that port.
    let grpc_probe = "            grpc:\n              port: {{ .Values.grpcPort }}\n              service: \"\"\n";
    assert!(
        deployment.contains(&format!("          readinessProbe:\n{grpc_probe}")),
        "readinessProbe is not the gRPC probe of service \"\" on grpcPort"
    );
    assert!(deployment.contains("{{- if .Values.tls.enabled }}"));
    // Liveness checks the same port: by default the gRPC probe of the health name that stays
    // SERVING while Redis is down (so an outage restarts nothing), or that the port accepts
    // connections.
    let values = read("helm/redis-gateway/values.yaml");
    let liveness = entry(&block_at(&values, &["probes", "liveness"]), "type");
    assert_eq!(liveness, "grpc");
    let liveness_probe = format!(
        "          livenessProbe:\n            grpc:\n              port: {{{{ .Values.grpcPort }}}}\n              service: {}\n",
        redis_gateway::server::LIVENESS
    );
    assert!(
        deployment.contains(&liveness_probe),
        "livenessProbe is not the gRPC probe of the liveness health name"
    );
    assert!(
        deployment.contains(
            "          livenessProbe:\n            tcpSocket:\n              port: grpc\n"
        )
    );

    // The chart's other defaults are settings the gateway accepts, together with what the
    // ConfigMap derives (auth: the `none` branch; Redis: any URL).
    let mut settings = vec![
        (
            "GATEWAY_LISTEN".to_owned(),
            format!("0.0.0.0:{}", defaults.grpc_port),
        ),
        (
            "GATEWAY_METRICS_LISTEN".to_owned(),
            format!("0.0.0.0:{}", defaults.metrics_port),
        ),
        (
            "GATEWAY_DRAIN_TIMEOUT".to_owned(),
            format!("{}s", defaults.drain_seconds),
        ),
        ("GATEWAY_AUTH".to_owned(), "none".to_owned()),
        ("REDIS_URL".to_owned(), "redis://redis:6379/0".to_owned()),
    ];
    settings.extend(entries(&block_at(&values, &["config"])));
    let config = config_from(&settings).unwrap();
    assert_eq!(config.listen.port(), GRPC_PORT);
}

#[test]
fn the_image_chart_and_compose_versions_are_the_crate_version() {
    let version = env!("CARGO_PKG_VERSION");
    let label = runtime_stage()
        .into_iter()
        .filter(|(name, _)| name == "LABEL")
        .flat_map(|(_, args)| {
            args.split_whitespace()
                .filter_map(|pair| pair.split_once('=').map(|(k, v)| (k.to_owned(), scalar(v))))
                .collect::<Vec<_>>()
        })
        .find_map(|(key, value)| (key == "org.opencontainers.image.version").then_some(value));
    assert_eq!(label.as_deref(), Some(version), "the image's version label");
    let chart = read("helm/redis-gateway/Chart.yaml");
    let chart: Vec<&str> = chart.lines().collect();
    assert_eq!(
        entry(&chart, "appVersion"),
        version,
        "Chart.yaml appVersion"
    );
    for file in COMPOSE_FILES {
        let text = read(file);
        let gateway = block_at(&text, &["services", "gateway"]);
        assert_eq!(
            entry(&gateway, "image"),
            format!("redis-gateway:{version}"),
            "{file}"
        );
    }
}
