//! Subscribing on Redis: one connection per node, owned by one task, open while anything is
//! subscribed.
//!
//! The task subscribes to a channel when its first local subscriber comes and unsubscribes
//! when the last goes (see [`Fanout`]), hands every message to the fan-out, and when the
//! connection is lost (Redis restarted, a `CLIENT KILL`, a network cut) connects again and
//! subscribes to every channel that still has subscribers. Messages published while it is
//! disconnected are missed: pub/sub is at most once; each subscriber's
//! [`crate::Subscription::missed`] grows by one when the connection is made again, so those
//! that keep state from a channel know to read it afresh.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot};

use crate::BackplaneError;
use crate::fanout::Fanout;

/// Longest a subscribe waits for Redis to confirm it (across a reconnection).
const CONFIRM: Duration = Duration::from_secs(10);

/// Pause between attempts to reconnect.
const RECONNECT: Duration = Duration::from_millis(500);

enum Command {
    Subscribe(String, oneshot::Sender<Result<(), BackplaneError>>),
    Unsubscribe(String),
}

/// Talks to the subscribing task.
pub(super) struct Handle {
    commands: mpsc::UnboundedSender<Command>,
    /// Put before every channel name on Redis: `{prefix}:ps:`.
    namespace: String,
}

impl Handle {
    /// The Redis channel of `channel`.
    pub(super) fn channel(&self, channel: &str) -> String {
        format!("{}{channel}", self.namespace)
    }

    /// Subscribes to `channel`; returns once Redis confirmed it.
    pub(super) async fn subscribe(&self, channel: &str) -> Result<(), BackplaneError> {
        let (reply, confirmed) = oneshot::channel();
        let gone = || {
            BackplaneError::Unavailable(redis::RedisError::from((
                redis::ErrorKind::IoError,
                "the subscribing connection did not confirm in time",
            )))
        };
        self.commands
            .send(Command::Subscribe(channel.to_owned(), reply))
            .map_err(|_| gone())?;
        match tokio::time::timeout(CONFIRM, confirmed).await {
            Ok(Ok(r)) => r,
            _ => Err(gone()),
        }
    }
}

/// Starts the subscribing task on `client`; returns the fan-out it feeds and its handle.
/// The task ends when both are dropped.
pub(super) fn start(client: redis::Client, namespace: String) -> (Arc<Fanout>, Handle) {
    let (commands, rx) = mpsc::unbounded_channel();
    let unsubscribe = commands.clone();
    let fanout = Fanout::new(Some(Box::new(move |channel: &str| {
        let _ = unsubscribe.send(Command::Unsubscribe(channel.to_owned()));
    })));
    tokio::spawn(run(client, Arc::downgrade(&fanout), namespace.clone(), rx));
    (
        fanout,
        Handle {
            commands,
            namespace,
        },
    )
}

/// Why a connection's session ended.
enum Ended {
    /// Every handle is gone.
    Stop,
    /// The connection failed: connect again.
    Lost,
}

async fn run(
    client: redis::Client,
    fanout: Weak<Fanout>,
    namespace: String,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    // A command that came while there was no connection, handled once there is one.
    let mut waiting: Option<Command> = None;
    let mut failing = false;
    // Whether a connection was lost with subscribers on it, so the next one marks a gap.
    let mut lost = false;
    loop {
        let idle = fanout.upgrade().is_none_or(|f| f.channels().is_empty());
        if idle && waiting.is_none() {
            // Nobody subscribed through the lost connection is left to have missed anything.
            lost = false;
            // Connected only while something is subscribed.
            match commands.recv().await {
                None => return,
                Some(Command::Unsubscribe(_)) => continue,
                Some(subscribe) => waiting = Some(subscribe),
            }
        }
        match client.get_async_pubsub().await {
            Ok(conn) => {
                failing = false;
                let (sink, stream) = conn.split();
                let session = session(
                    sink,
                    stream,
                    &fanout,
                    &namespace,
                    &mut commands,
                    (waiting.take(), lost),
                );
                match session.await {
                    Ended::Stop => return,
                    Ended::Lost => {
                        lost = true;
                        tracing::warn!("Redis subscribing connection lost; reconnecting")
                    }
                }
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot open the Redis subscribing connection; retrying");
            }
            Err(_) => {}
        }
        if fanout.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

async fn session(
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    fanout: &Weak<Fanout>,
    namespace: &str,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    (waiting, after_loss): (Option<Command>, bool),
) -> Ended {
    let Some(channels) = fanout.upgrade().map(|f| f.channels()) else {
        return Ended::Stop;
    };
    for c in channels {
        if sink.subscribe(format!("{namespace}{c}")).await.is_err() {
            return Ended::Lost;
        }
    }
    if after_loss && let Some(f) = fanout.upgrade() {
        f.gap();
    }
    if let Some(command) = waiting
        && handle(command, (&mut sink, &mut stream), fanout, namespace)
            .await
            .is_err()
    {
        return Ended::Lost;
    }
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { return Ended::Stop };
                if handle(command, (&mut sink, &mut stream), fanout, namespace).await.is_err() {
                    return Ended::Lost;
                }
            }
            message = stream.next() => {
                let Some(message) = message else { return Ended::Lost };
                let Some(fanout) = fanout.upgrade() else { return Ended::Stop };
                deliver(&fanout, namespace, &message);
            }
        }
    }
}

/// Hands a message Redis sent to the subscribers of its channel.
fn deliver(fanout: &Fanout, namespace: &str, message: &redis::Msg) {
    if let Some(channel) = message.get_channel_name().strip_prefix(namespace) {
        fanout.deliver(
            channel,
            &Bytes::copy_from_slice(message.get_payload_bytes()),
        );
    }
}

/// Carries out `command` on the connection; an error means the connection is lost.
async fn handle(
    command: Command,
    (sink, stream): (&mut PubSubSink, &mut PubSubStream),
    fanout: &Weak<Fanout>,
    namespace: &str,
) -> Result<(), ()> {
    match command {
        Command::Subscribe(channel, reply) => {
            let done = sink.subscribe(format!("{namespace}{channel}")).await;
            let lost = done.is_err();
            if let (false, Some(f)) = (lost, fanout.upgrade()) {
                // Redis answered the SUBSCRIBE after every message it had sent this
                // connection before, and the client has read them all by now: hand those to
                // the subscribers that were already there, then let the new ones receive.
                while let Some(Some(message)) = stream.next().now_or_never() {
                    deliver(&f, namespace, &message);
                }
                f.arm(&channel);
            }
            let _ = reply.send(done.map_err(BackplaneError::from));
            if lost { Err(()) } else { Ok(()) }
        }
        Command::Unsubscribe(channel) => {
            // Someone may have subscribed again meanwhile.
            let still = fanout
                .upgrade()
                .is_some_and(|f| f.channels().contains(&channel));
            if still {
                return Ok(());
            }
            sink.unsubscribe(format!("{namespace}{channel}"))
                .await
                .map_err(|_| ())
        }
    }
}
