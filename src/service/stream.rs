//! The one way a service answers with a server stream (KeyValue.Scan, Hash.Scan, Lock.Hold,
//! and the expiry streams next).
//!
//! A producer task is spawned under the shared task tracker and feeds a bounded channel that
//! tonic drains. One channel slot is reserved up front for the closing word, so a client that
//! stopped reading can never keep the task (and the drain) waiting to tell it why the stream
//! ended.
//!
//! - [`Context::stream`]: the task ends when the producer is done, when the client goes away
//!   (even while the producer waits on Redis or on events), and when the server drains (the
//!   client then gets UNAVAILABLE "shutting down"). For producers with nothing to undo.
//! - [`Context::stream_managed`]: the producer itself watches [`Sink::closed`] and the
//!   shutdown token, so it can undo what it holds (Lock.Hold releases its lock) and choose its
//!   last message.

use std::future::Future;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::Context;
use crate::error::Error;

/// Messages buffered between the producer and the client, besides the reserved last slot.
const STREAM_BUFFER: usize = 4;

/// What a streaming handler returns.
pub type ResponseStream<T> = ReceiverStream<Result<T, Status>>;

/// The producer's end of a server stream.
pub struct Sink<T> {
    sender: mpsc::Sender<Result<T, Status>>,
}

impl<T> Sink<T> {
    /// Sends one message, waiting while the client is slow; false when the client has gone.
    pub async fn send(&self, message: T) -> bool {
        self.sender.send(Ok(message)).await.is_ok()
    }

    /// Sends one message if the buffer has room; a client that is not reading misses it
    /// (for events that later ones supersede); false when the client has gone.
    pub fn offer(&self, message: T) -> bool {
        !matches!(
            self.sender.try_send(Ok(message)),
            Err(mpsc::error::TrySendError::Closed(_))
        )
    }

    /// Resolves when the client has gone (cancelled, disconnected or dropped the stream).
    pub async fn closed(&self) {
        self.sender.closed().await;
    }
}

impl Context {
    /// Starts `produce` as a tracked task that streams its messages to the client; an error
    /// it returns ends the stream with that error's status.
    pub fn stream<T, F, Fut>(&self, produce: F) -> ResponseStream<T>
    where
        T: Send + 'static,
        F: FnOnce(Sink<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER + 1);
        let shared = self.shared.clone();
        shared.stats.open_streams.fetch_add(1, Ordering::Relaxed);
        shared.stats.streams_opened.fetch_add(1, Ordering::Relaxed);
        self.shared.tasks.spawn(async move {
            let client_gone = sender.clone();
            if let Ok(last_word) = sender.clone().reserve_owned().await {
                let outcome = tokio::select! {
                    outcome = produce(Sink { sender }) => outcome,
                    () = shared.shutdown.cancelled() => Err(Error::ShuttingDown),
                    () = client_gone.closed() => Ok(()),
                };
                if let Err(err) = outcome {
                    last_word.send(Err(err.into()));
                }
            }
            shared.stats.open_streams.fetch_sub(1, Ordering::Relaxed);
        });
        ReceiverStream::new(receiver)
    }

    /// Starts `produce` as a tracked task that streams its messages to the client and ends
    /// only when `produce` returns: it must watch [`Sink::closed`] and the shutdown token
    /// itself. What it returns is the stream's last word (a final message, or an error status),
    /// sent through the reserved slot even to a client that stopped reading.
    pub fn stream_managed<T, F, Fut>(&self, produce: F) -> ResponseStream<T>
    where
        T: Send + 'static,
        F: FnOnce(Sink<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<T>, Error>> + Send + 'static,
    {
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER + 1);
        let shared = self.shared.clone();
        shared.stats.open_streams.fetch_add(1, Ordering::Relaxed);
        shared.stats.streams_opened.fetch_add(1, Ordering::Relaxed);
        self.shared.tasks.spawn(async move {
            if let Ok(last_word) = sender.clone().reserve_owned().await {
                match produce(Sink { sender }).await {
                    Ok(Some(message)) => {
                        last_word.send(Ok(message));
                    }
                    Ok(None) => {}
                    Err(err) => {
                        last_word.send(Err(err.into()));
                    }
                }
            }
            shared.stats.open_streams.fetch_sub(1, Ordering::Relaxed);
        });
        ReceiverStream::new(receiver)
    }
}
