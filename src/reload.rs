//! Files the gateway reads again while it runs (the auth file, the gRPC port's TLS material):
//! when one's modification time or size changes (checked every 2 s), and at once on SIGHUP,
//! whether or not they look changed.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the files are checked for a change.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Calls `reload` whenever one of `paths` changes or `asked` fires (SIGHUP), until `shutdown`.
/// `reload` reads the files itself and decides what a bad version means.
pub async fn watch_files(
    paths: Vec<PathBuf>,
    mut asked: watch::Receiver<()>,
    shutdown: CancellationToken,
    mut reload: impl FnMut(),
) {
    let stamps = || -> Vec<Option<(SystemTime, u64)>> {
        paths
            .iter()
            .map(|path| {
                std::fs::metadata(path).ok().map(|meta| {
                    (
                        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        meta.len(),
                    )
                })
            })
            .collect()
    };
    let mut seen = stamps();
    let mut ticker = tokio::time::interval(CHECK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let on_signal = tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => false,
            () = signalled(&mut asked) => true,
        };
        let now = stamps();
        if now == seen && !on_signal {
            continue;
        }
        seen = now;
        reload();
    }
}

/// Returns when `asked` fires; never once no one can fire it any more.
async fn signalled(asked: &mut watch::Receiver<()>) {
    if asked.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}
