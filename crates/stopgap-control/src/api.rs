//! The admin API (axum): JSON over HTTP/1.1, documented in docs/admin-api.md and
//! docs/openapi.yaml.
//!
//! Every call that changes something needs `Authorization: Bearer <token>`; a missing or wrong
//! token gets `401`, changes nothing, and is written to the audit log. Read-only calls are open
//! when the API listens on a loopback address and need a token otherwise.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use stopgap_proxy::audit::control_event;
use stopgap_proxy::ControlEvent;

use crate::controller::{Actor, ChangeError, Controller};
use crate::state::PatchState;
use crate::token::{bearer, Token};

/// Most audit events one call returns.
pub const MAX_AUDIT_LIMIT: usize = stopgap_proxy::audit::RECENT;

/// What the API serves.
#[derive(Debug)]
pub struct AdminApi {
    /// The patch lifecycle.
    pub controller: Arc<Controller>,
    /// What each upstream runs.
    pub assets: Arc<stopgap_assets::Assets>,
    /// Where imported facts are kept across restarts.
    pub imports_file: std::path::PathBuf,
    /// Strikes and bans per source address.
    pub escalation: Arc<stopgap_proxy::escalation::Escalation>,
    /// Accepted tokens.
    pub tokens: Vec<Token>,
    /// Whether read-only calls need no token (the API listens on loopback).
    pub open_reads: bool,
}

/// An error answer: a status and `{"error": "…", "errors": […]}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    errors: Vec<String>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            errors: Vec::new(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if !self.errors.is_empty() {
            body["errors"] = json!(self.errors);
        }
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"stopgap\""),
            );
        }
        resp
    }
}

type ApiResult = Result<Json<Value>, ApiError>;
type Shared = Arc<AdminApi>;

/// The router; serve it with `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn router(api: Shared) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/status", get(status))
        .route("/v1/patches", get(list))
        // GET reads one patch; POST /v1/patches/apply|unapply|monitor changes states.
        .route("/v1/patches/{id}", get(one).post(change))
        .route("/v1/reload", post(reload))
        .route("/v1/audit", get(audit))
        .route("/v1/assets", get(assets))
        .route("/v1/bans", get(bans))
        .route("/v1/assets/import", post(import_assets))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(api)
}

impl AdminApi {
    /// Checks the caller's token. Reads pass without one when `open_reads`.
    async fn authorize(
        &self,
        headers: &HeaderMap,
        remote: SocketAddr,
        method: &Method,
        uri: &Uri,
        mutating: bool,
    ) -> Result<Actor, ApiError> {
        let presented = bearer(
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        );
        let found = presented.and_then(|p| self.tokens.iter().find(|t| t.matches(p)));
        if let Some(t) = found {
            return Ok(Actor {
                name: t.name.clone(),
                remote: Some(remote.to_string()),
            });
        }
        if !mutating && self.open_reads {
            return Ok(Actor {
                name: "anonymous".into(),
                remote: Some(remote.to_string()),
            });
        }
        let why = if presented.is_some() {
            "wrong token"
        } else {
            "missing token"
        };
        let controller = &self.controller;
        controller.metrics().unauthorized();
        let generation = controller.snapshot().load().generation;
        if let Err(e) = controller
            .audit()
            .record_control(ControlEvent {
                event: control_event::ADMIN_UNAUTHORIZED,
                actor: "unknown".into(),
                remote: Some(remote.to_string()),
                generation,
                result: "denied",
                detail: Some(format!("{method} {uri}: {why}")),
                ..ControlEvent::default()
            })
            .await
        {
            tracing::error!("cannot log a refused admin call: {e}");
        }
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("{why}: send Authorization: Bearer <token> (the token is in the gateway's token file)"),
        ))
    }
}

async fn health(State(api): State<Shared>) -> Json<Value> {
    let generation = api.controller.snapshot().load().generation;
    Json(json!({ "status": "ok", "generation": generation }))
}

async fn status(
    State(api): State<Shared>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult {
    api.authorize(&headers, remote, &method, &uri, false)
        .await?;
    let mut v = serde_json::to_value(api.controller.status().await).unwrap_or_default();
    v["version"] = json!(env!("CARGO_PKG_VERSION"));
    Ok(Json(v))
}

async fn list(
    State(api): State<Shared>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult {
    api.authorize(&headers, remote, &method, &uri, false)
        .await?;
    let generation = api.controller.snapshot().load().generation;
    let patches = api.controller.list().await;
    Ok(Json(
        json!({ "generation": generation, "patches": patches }),
    ))
}

async fn one(
    State(api): State<Shared>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult {
    api.authorize(&headers, remote, &method, &uri, false)
        .await?;
    let patches = api.controller.list().await;
    let p = patches
        .into_iter()
        .find(|p| p.id == id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no patch `{id}`")))?;
    Ok(Json(serde_json::to_value(p).unwrap_or_default()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeBody {
    ids: Vec<String>,
}

async fn change(
    State(api): State<Shared>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(verb): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let state = match verb.as_str() {
        "apply" => PatchState::Applied,
        "unapply" => PatchState::Unapplied,
        "monitor" => PatchState::Monitor,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no such call POST {uri}: use /v1/patches/apply, /unapply or /monitor"),
            ))
        }
    };
    let actor = api.authorize(&headers, remote, &method, &uri, true).await?;
    let parsed: ChangeBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("body must be {{\"ids\": [\"SG-…\", …]}}: {e}"),
        )
    })?;
    match api.controller.set_state(&parsed.ids, state, &actor).await {
        Ok(report) => Ok(Json(serde_json::to_value(report).unwrap_or_default())),
        Err(e) => {
            let status = match &e {
                ChangeError::UnknownPatches(_) => StatusCode::NOT_FOUND,
                ChangeError::NoIds => StatusCode::BAD_REQUEST,
                ChangeError::ReadOnly(_) => StatusCode::CONFLICT,
                ChangeError::Persist { .. } | ChangeError::Audit(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            };
            Err(ApiError::new(status, e.to_string()))
        }
    }
}

async fn reload(
    State(api): State<Shared>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult {
    let actor = api.authorize(&headers, remote, &method, &uri, true).await?;
    match api.controller.reload(&actor).await {
        Ok(report) => Ok(Json(serde_json::to_value(report).unwrap_or_default())),
        Err(e) => Err(ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: "reload failed; the previous patches stay in force".into(),
            errors: e.errors,
        }),
    }
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<usize>,
}

async fn audit(
    State(api): State<Shared>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Query(q): Query<AuditQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult {
    api.authorize(&headers, remote, &method, &uri, false)
        .await?;
    let limit = q.limit.unwrap_or(100).min(MAX_AUDIT_LIMIT);
    let events: Vec<Value> = api
        .controller
        .audit()
        .recent(limit)
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    Ok(Json(json!({ "events": events })))
}

async fn assets(
    State(api): State<Shared>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult {
    api.authorize(&headers, remote, &method, &uri, false)
        .await?;
    let base = api.controller.snapshot().load_full();
    let report = api.assets.report(&base);
    Ok(Json(
        json!({ "generation": base.generation, "assets": report }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBody {
    source: String,
    xml: String,
}

async fn import_assets(
    State(api): State<Shared>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let actor = api.authorize(&headers, remote, &method, &uri, true).await?;
    let parsed: ImportBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("body must be {{\"source\": \"scan.xml\", \"xml\": \"<nmaprun>…\"}}: {e}"),
        )
    })?;
    let seen = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let facts = stopgap_assets::nmap::parse(&parsed.xml, &parsed.source, seen)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let base = api.controller.snapshot().load_full();
    let mut transitions = Vec::new();
    for (server, fact) in &facts {
        transitions.extend(api.assets.import(*server, fact.clone(), &base));
    }
    if let Err(e) = save_imports(&api.imports_file, &api.assets.imported()) {
        tracing::error!(
            "cannot keep imported facts in {}: {e}",
            api.imports_file.display()
        );
    }
    let audit = api.controller.audit();
    let _ = audit
        .record_control(ControlEvent {
            event: control_event::ASSET,
            actor: actor.name.clone(),
            remote: actor.remote.clone(),
            generation: base.generation,
            result: "ok",
            detail: Some(format!(
                "imported {} fact(s) from {}",
                facts.len(),
                parsed.source
            )),
            ..ControlEvent::default()
        })
        .await;
    for t in &transitions {
        let event =
            ControlEvent::asset_transition(t, &actor.name, actor.remote.clone(), base.generation);
        let _ = audit.record_control(event).await;
    }
    Ok(Json(json!({
        "imported": facts.iter().map(|(s, f)| json!({"server": s.to_string(), "product": f.product, "version": f.version, "raw": f.raw})).collect::<Vec<_>>(),
        "retired": transitions.iter().filter(|t| t.retired).map(|t| json!({"server": t.server.to_string(), "patch": t.patch, "reason": t.reason})).collect::<Vec<_>>(),
        "reengaged": transitions.iter().filter(|t| !t.retired).map(|t| json!({"server": t.server.to_string(), "patch": t.patch})).collect::<Vec<_>>(),
    })))
}

/// Writes the imported facts (temp file, fsync, rename).
///
/// # Errors
/// The file cannot be written.
pub fn save_imports(
    path: &std::path::Path,
    facts: &[(SocketAddr, stopgap_assets::Fact)],
) -> std::io::Result<()> {
    use std::io::Write as _;
    let text = serde_json::to_string_pretty(facts).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Reads facts saved by [`save_imports`]; none when the file does not exist.
///
/// # Errors
/// The file exists but is not a list of facts.
pub fn load_imports(
    path: &std::path::Path,
) -> Result<Vec<(SocketAddr, stopgap_assets::Fact)>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

async fn bans(
    State(api): State<Shared>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult {
    api.authorize(&headers, remote, &method, &uri, false)
        .await?;
    let c = api.escalation.config();
    let mode = match c.mode {
        stopgap_proxy::escalation::EscalationMode::Off => "off",
        stopgap_proxy::escalation::EscalationMode::Monitor => "monitor",
        stopgap_proxy::escalation::EscalationMode::Enforce => "enforce",
    };
    Ok(Json(json!({
        "mode": mode,
        "strikes": c.strikes,
        "window_s": c.window.as_secs(),
        "ban_s": c.ban.as_secs(),
        "bans": api.escalation.bans(std::time::Instant::now()),
    })))
}

async fn metrics(
    State(api): State<Shared>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api.authorize(&headers, remote, &method, &uri, false)
        .await?;
    let text = api.controller.metrics().encode();
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint {uri}; see docs/admin-api.md"),
    )
}
