//! [`LazyConnection`]: the shared connection of the limiter and of the publishing side of the
//! invalidation channel, created without connecting.

use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::Error;

/// A [`ConnectionManager`] that connects on first use, so that building a limiter or a channel
/// never needs Redis up.
///
/// - **First use**: the first command starts the connection attempt; while Redis is down, each
///   command fails (the caller bounds the wait) and the next one starts a new attempt, as the
///   manager does after a later outage. No retries inside one attempt: a backoff delay there
///   would hold every command waiting on the connection.
/// - **Failed set-up**: the manager reconnects by itself only after I/O errors. A connection
///   whose set-up Redis refused (`AUTH` answered with an error: a wrong password, or
///   `max number of clients reached`) would leave it failing for good, so then this type
///   replaces it with a new lazy one: the next command tries again.
pub(crate) struct LazyConnection {
    client: redis::Client,
    connection_timeout: Duration,
    response_timeout: Duration,
    current: RwLock<Current>,
}

/// The manager in use, and how many times it was replaced before.
#[derive(Clone)]
pub(crate) struct Current {
    generation: u64,
    /// Cheap to clone: every clone shares one multiplexed connection.
    pub(crate) manager: ConnectionManager,
}

impl LazyConnection {
    /// Does not connect. Must run inside a Tokio runtime (the manager spawns a task).
    ///
    /// # Errors
    /// [`Error::Redis`] when `client`'s settings cannot make a connection manager.
    pub(crate) fn new(
        client: redis::Client,
        connection_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<Self, Error> {
        let manager = manager(&client, connection_timeout, response_timeout)?;
        Ok(Self {
            client,
            connection_timeout,
            response_timeout,
            current: RwLock::new(Current {
                generation: 0,
                manager,
            }),
        })
    }

    /// The manager to send a command on; pass it back to [`settle`](Self::settle) with the
    /// command's result.
    pub(crate) fn current(&self) -> Current {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Connects (if need be) and loads `script`, waiting at most `limit`: the warm-up of a
    /// limiter or meter, so that its first requests cost one round trip as later ones do.
    pub(crate) async fn load_script(
        &self,
        script: &redis::Script,
        limit: Duration,
    ) -> Result<(), Error> {
        let mut connection = self.current();
        let loaded = crate::error::within(
            limit,
            script.prepare_invoke().load_async(&mut connection.manager),
        )
        .await;
        self.settle(&connection, loaded).map(|_| ())
    }

    /// Replaces `used` with a new lazy manager when `result` says Redis refused to set the
    /// connection up (see [`LazyConnection`]), unless another command replaced it already.
    pub(crate) fn settle<T>(&self, used: &Current, result: Result<T, Error>) -> Result<T, Error> {
        if let Err(Error::Redis(error)) = &result
            && error.kind() == redis::ErrorKind::AuthenticationFailed
        {
            let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
            if current.generation == used.generation
                && let Ok(manager) =
                    manager(&self.client, self.connection_timeout, self.response_timeout)
            {
                *current = Current {
                    generation: used.generation + 1,
                    manager,
                };
            }
        }
        result
    }
}

fn manager(
    client: &redis::Client,
    connection_timeout: Duration,
    response_timeout: Duration,
) -> Result<ConnectionManager, Error> {
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(0)
        .set_connection_timeout(Some(connection_timeout))
        .set_response_timeout(Some(response_timeout));
    Ok(ConnectionManager::new_lazy_with_config(
        client.clone(),
        config,
    )?)
}
