//! keygate-admin: manage API keys over HTTP. A JSON admin API over the same operations as the
//! `keygate` CLI, secured by keygate keys with admin scopes (checked by keygate's own
//! verifier), described by an OpenAPI 3.1 document generated from the handlers.
//!
//! | item | what it is |
//! | --- | --- |
//! | [`AdminApi`] | the API as an axum `Router` to nest under a path of your choice |
//! | [`router`] | the same, in one call, without an audit trail |
//! | [`READ_SCOPE`], [`WRITE_SCOPE`] | the scopes admin keys carry |
//! | [`views`] | the JSON the API answers |
//! | [`input`] | the bodies and query parameters it takes |
//! | [`Problem`], [`ApiError`] | its errors, as `application/problem+json` |
//! | [`CONSOLE_CSP`] | the Content-Security-Policy the web console is served with |
//!
//! Endpoints (paths relative to where the router is mounted; the reference is the document
//! served at `/openapi.json`):
//!
//! | method and path | scope | what it does |
//! | --- | --- | --- |
//! | `GET /keys` | read | list keys: `state`, `owner`, `search`, `environment`, `limit`, `after` (keyset pages) |
//! | `GET /environments` | read | the environments of the service's keyring (name, prefix, default) |
//! | `POST /keys` | write | create a key; the response holds the full key, once |
//! | `GET /keys/{id}` | read | one key |
//! | `DELETE /keys/{id}` | write | delete a key for good |
//! | `PUT /keys/{id}/name`, `/scopes`, `/expiry`, `/rate-limit`, `/metadata`, `/allowed-ips` | write | change one property |
//! | `POST /keys/{id}/disable`, `/enable`, `/revoke` | write | change the key's state |
//! | `POST /keys/{id}/rotate` | write | a new key replacing this one after a grace period; the response holds it, once |
//! | `GET /owners`, `GET /owners/{id}` | read | owners (keyset pages by id), one owner with its key count |
//! | `POST /owners`, `PATCH /owners/{id}`, `DELETE /owners/{id}` | write | create, change, delete an owner |
//! | `POST /owners/{id}/disable`, `/enable`, `/revoke` | write | the action on every key of the owner, in one transaction |
//! | `GET /audit` | read | the audit trail, newest first: `key_id` or `owner`, `outcome`, `reason`, `action`, `since`, `before`, `limit` |
//! | `GET /usage` | read | requests per key per UTC day: `key_id` or `owner`, `days` |
//! | `GET /policy` | read | the deployment's key lifetime policy |
//! | `PUT /policy` | write | replace the lifetime policy (creates, expiry changes and rotations it refuses answer 422, naming the rule) |
//! | `GET /openapi.json` | none | the OpenAPI 3.1 document |
//! | `GET /console` (and `/console.js`, `/console.css`) | none to load; the admin key for every call it makes | the web console |
//!
//! See docs/admin.md for mounting and securing it.

mod api;
mod audit;
mod console;
mod docs;
mod environments;
mod error;
pub mod input;
mod keys;
mod owners;
mod policy;
mod state;
pub mod views;

pub use api::{AdminApi, READ_SCOPE, WRITE_SCOPE, router};
pub use console::CONSOLE_CSP;
pub use docs::{ChangeErrors, CreateErrors, ReadErrors, TrailErrors};
pub use error::{ApiError, Problem};
