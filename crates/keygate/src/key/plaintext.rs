use std::fmt;

use zeroize::Zeroize;

/// A full API key in clear, as handed to its owner once, at creation or rotation.
///
/// This type is deliberately awkward: it is not `Clone`, not `Serialize`, its `Debug` and `Display`
/// print `[redacted]`, and its memory is zeroed when it is dropped. The only way to read the key is
/// [`PlaintextKey::expose_secret`], so every place that shows a key is easy to find.
///
/// Neither copies nor serialisation compile (SECURITY-CHECKLIST item 9):
///
/// ```compile_fail
/// fn copy(key: &keygate::PlaintextKey) -> keygate::PlaintextKey {
///     key.clone()
/// }
/// ```
///
/// ```compile_fail
/// fn to_json(key: &keygate::PlaintextKey) -> serde_json::Result<String> {
///     serde_json::to_string(key)
/// }
/// ```
pub struct PlaintextKey(String);

impl PlaintextKey {
    pub(crate) fn new(key: String) -> Self {
        Self(key)
    }

    /// The key in clear. Show it to its owner once; never log or store it.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The buffer's capacity: tests check it was sized exactly (no reallocation left a copy).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl Drop for PlaintextKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for PlaintextKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlaintextKey([redacted])")
    }
}

impl fmt::Display for PlaintextKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
