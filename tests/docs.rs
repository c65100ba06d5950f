//! The README stays true to the binary: every flag and environment variable of
//! `redis-gateway --help` has exactly one row in the README's configuration table, with its
//! own environment variable, and the table names nothing the binary does not have; and the
//! grpcurl cookbook calls every RPC of every service in `proto/`.

use std::collections::HashMap;

use clap::CommandFactory;
use redis_gateway::config::Config;

/// The rows of the README's configuration table: (flag, environment variable).
fn documented_settings() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("a Configuration section")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    section
        .lines()
        .filter(|line| line.starts_with("| `--"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let unquote = |cell: &str| cell.trim_matches('`').to_owned();
            (unquote(cells[1]), unquote(cells[2]))
        })
        .collect()
}

#[test]
fn every_setting_is_documented_exactly_once_with_its_environment_variable() {
    let documented = documented_settings();
    assert!(
        documented.len() > 30,
        "the table was not found: {documented:?}"
    );
    let mut rows: HashMap<&str, usize> = HashMap::new();
    for (flag, _) in &documented {
        *rows.entry(flag.as_str()).or_default() += 1;
    }
    let command = Config::command();
    let mut missing = Vec::new();
    let mut known = Vec::new();
    for argument in command.get_arguments() {
        let Some(long) = argument.get_long() else {
            continue;
        };
        if matches!(long, "help" | "version") || argument.is_hide_set() {
            continue;
        }
        let flag = format!("--{long}");
        let env = argument
            .get_env()
            .map(|env| env.to_string_lossy().into_owned())
            .unwrap_or_else(|| "—".to_owned());
        match documented
            .iter()
            .find(|(documented, _)| *documented == flag)
        {
            None => missing.push(flag.clone()),
            Some((_, documented_env)) => assert_eq!(
                documented_env, &env,
                "{flag}: the README names another environment variable"
            ),
        }
        known.push(flag);
    }
    assert!(
        missing.is_empty(),
        "settings missing from the README's table: {missing:?}"
    );
    let twice: Vec<_> = rows.iter().filter(|(_, count)| **count > 1).collect();
    assert!(twice.is_empty(), "documented more than once: {twice:?}");
    let unknown: Vec<_> = documented
        .iter()
        .filter(|(flag, _)| !known.contains(flag))
        .collect();
    assert!(
        unknown.is_empty(),
        "the README documents settings the binary does not have: {unknown:?}"
    );
}

#[test]
fn the_grpcurl_cookbook_calls_every_rpc_of_every_service() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("read README.md");
    let cookbook = readme
        .split("\n## grpcurl cookbook\n")
        .nth(1)
        .expect("a grpcurl cookbook section")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    let mut rpcs = Vec::new();
    for entry in std::fs::read_dir(format!("{root}/proto/redisgateway/v1")).expect("proto/") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read a proto");
        let mut service = None;
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["service", name, ..] => service = Some(name.to_string()),
                ["rpc", call, ..] => {
                    let call = call.split('(').next().unwrap_or_default();
                    let service = service.as_ref().expect("an rpc inside a service");
                    rpcs.push(format!("redisgateway.v1.{service}/{call}"));
                }
                _ => {}
            }
        }
    }
    assert!(rpcs.len() > 40, "{rpcs:?}");
    let missing: Vec<_> = rpcs
        .iter()
        .filter(|rpc| {
            !cookbook.match_indices(rpc.as_str()).any(|(at, _)| {
                !cookbook[at + rpc.len()..].starts_with(|c: char| c.is_alphanumeric())
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "not in the grpcurl cookbook: {missing:?}"
    );
}
