//! Where to connect: a URL or a configured `redis::Client`.

/// The Redis server to use: a URL (`redis://[:password@]host[:port][/db]`, `rediss://…` needs
/// a TLS feature of the `redis` crate) or a [`redis::Client`] configured by the application.
///
/// `Debug` never shows the URL: it may carry a password.
#[derive(Clone)]
pub enum RedisTarget {
    /// A connection URL, parsed when the limiter or channel is built.
    Url(String),
    /// A client configured by the application.
    Client(redis::Client),
}

impl RedisTarget {
    pub(crate) fn client(&self) -> Result<redis::Client, crate::Error> {
        match self {
            Self::Url(url) => Ok(redis::Client::open(url.as_str())?),
            Self::Client(client) => Ok(client.clone()),
        }
    }
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Url(_) => f.write_str("RedisTarget::Url(<redacted>)"),
            Self::Client(_) => f.write_str("RedisTarget::Client(..)"),
        }
    }
}

impl From<&str> for RedisTarget {
    fn from(url: &str) -> Self {
        Self::Url(url.to_owned())
    }
}

impl From<String> for RedisTarget {
    fn from(url: String) -> Self {
        Self::Url(url)
    }
}

impl From<&String> for RedisTarget {
    fn from(url: &String) -> Self {
        Self::Url(url.clone())
    }
}

impl From<redis::Client> for RedisTarget {
    fn from(client: redis::Client) -> Self {
        Self::Client(client)
    }
}
