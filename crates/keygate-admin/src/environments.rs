//! The environments endpoint: the key environments the service's keyring names, for the
//! `environment` filter of `GET /keys` and of key creation.

use axum::Json;
use axum::extract::State;

use crate::docs::ReadErrors;
use crate::error::ApiError;
use crate::state::ApiState;
use crate::views::{EnvironmentList, EnvironmentView};

/// Lists the environments keys can be minted in (and listed by), the default first; empty
/// when the service's keyring has one unnamed format.
#[utoipa::path(
    get,
    path = "/environments",
    tag = "keys",
    responses((status = 200, description = "The keyring's environments, the default first", body = EnvironmentList), ReadErrors),
    security(("api_key" = ["keygate:admin:read"]))
)]
pub(crate) async fn list(State(state): State<ApiState>) -> Result<Json<EnvironmentList>, ApiError> {
    let environments = state
        .admin
        .keyring()
        .map(|keyring| {
            keyring
                .environments()
                .iter()
                .enumerate()
                .map(|(i, e)| EnvironmentView {
                    name: e.name().to_owned(),
                    prefix: e.prefix().to_owned(),
                    default: i == 0,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(EnvironmentList { environments }))
}
