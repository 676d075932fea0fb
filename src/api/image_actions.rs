//! `POST /v2/images/{id}/actions/deactivate` and `…/reactivate`, as upstream's
//! `image_actions`: the `deactivate` and `reactivate` rules (upstream's defaults: an
//! administrator, or a member of the image's project), active <-> deactivated, a no-op
//! when the image is already there, and 403 from any other status. The move is one
//! conditional update, so replicas acting at once agree. Downloads of a deactivated
//! image are refused to all but administrators (`data::prepare`).

use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use tracing::info;

use super::access::{Caller, forbidden, permit};
use super::data::image_to_check;
use super::error::ApiError;
use super::images::path_id;
use super::state::AppState;

/// One of the two actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Deactivate,
    Reactivate,
}

impl Action {
    /// The policy rule, and the verb of upstream's refusal.
    fn name(self) -> &'static str {
        match self {
            Self::Deactivate => "deactivate",
            Self::Reactivate => "reactivate",
        }
    }

    /// The status the action leaves, and the one it starts from.
    fn statuses(self) -> (&'static str, &'static str) {
        match self {
            Self::Deactivate => ("active", "deactivated"),
            Self::Reactivate => ("deactivated", "active"),
        }
    }
}

/// POST /v2/images/{id}/actions/deactivate
pub async fn deactivate(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    act(&state, &caller, &raw, Action::Deactivate).await
}

/// POST /v2/images/{id}/actions/reactivate
pub async fn reactivate(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    act(&state, &caller, &raw, Action::Reactivate).await
}

async fn act(
    state: &AppState,
    caller: &Caller,
    raw: &str,
    action: Action,
) -> Result<StatusCode, ApiError> {
    let id = path_id(raw)?;
    let image = image_to_check(state, caller, &id).await?;
    permit(state, caller, action.name(), &image).await?;
    let (from, to) = action.statuses();
    let mut status = image.status;
    // A replica may move the image between the read and the update: read again then.
    for _ in 0..3 {
        if status == to {
            return Ok(StatusCode::NO_CONTENT);
        }
        if status != from {
            return Err(forbidden(format!(
                "Not allowed to {} image in status '{status}'",
                action.name()
            )));
        }
        if state.db.transition(&id, &[from], to).await? {
            info!(image = %id, "image {}d", action.name());
            return Ok(StatusCode::NO_CONTENT);
        }
        status = match state.db.get_row(&id).await? {
            Some(image) => image.status,
            None => return Err(ApiError::not_found(format!("No image found with ID {id}"))),
        };
    }
    Err(ApiError {
        status: StatusCode::CONFLICT,
        message: format!(
            "Image {id} changed status while it was being {}d",
            action.name()
        ),
    })
}
