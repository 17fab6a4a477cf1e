//! The three BigQuery destinations for a `serve` tenant ([`Confined`]):
//! the same destinations, built from a copy of the config whose endpoints
//! are routes through the tenant's egress (every endpoint, the defaults
//! included: Google's REST, Storage Write and GCS hosts) and whose key is
//! the tenant's secret (`service_account_key: secret://NAME`).
//!
//! No other credentials are ever used: without a key the destination runs
//! only against endpoints the tenant named (an emulator, anonymous), and
//! never with the host's application default credentials. A service
//! account key signs its own tokens (self-signed JWTs, google-cloud-auth),
//! so no token endpoint is reached either.

use super::config::{
    AppendConnections, Authentication, BigQueryConfig, BigQueryStreamingConfig, BigQueryStreamingV2Config,
};
use super::{load, streaming_v2, tables};
use crate::config::secret;
use crate::destination::confined::{Charged, Confined, Route};
use crate::destination::{DestinationError, SharedDestination};

pub async fn build_batch(c: &BigQueryConfig, t: &Confined) -> Result<SharedDestination, DestinationError> {
    let mut c = c.clone();
    let named = c.endpoint.is_some() || c.gcs_endpoint.is_some();
    c.authentication = key(c.authentication.as_ref(), t, named)?;
    let mut routes = Vec::new();
    c.endpoint = Some(route(t, c.endpoint.as_deref(), tables::DEFAULT_ENDPOINT, &mut routes).await?);
    // A bare host:port is an emulator's address, as STORAGE_EMULATOR_HOST
    // gives it (which is the host's environment: never read for a tenant).
    let gcs = c.gcs_endpoint.as_deref().map(|e| match e.contains("://") {
        true => e.to_string(),
        false => format!("http://{e}"),
    });
    c.gcs_endpoint = Some(route(t, gcs.as_deref(), load::GCS_DEFAULT_ENDPOINT, &mut routes).await?);
    Ok(Charged::wrap(super::build_batch(&c).await?, t, routes))
}

pub async fn build_streaming(c: &BigQueryStreamingConfig, t: &Confined) -> Result<SharedDestination, DestinationError> {
    let mut c = c.clone();
    c.authentication = key(c.authentication.as_ref(), t, c.endpoint.is_some())?;
    let mut routes = Vec::new();
    c.endpoint = Some(route(t, c.endpoint.as_deref(), tables::DEFAULT_ENDPOINT, &mut routes).await?);
    Ok(Charged::wrap(super::build_streaming(&c).await?, t, routes))
}

pub async fn build_streaming_v2(
    c: &BigQueryStreamingV2Config,
    t: &Confined,
) -> Result<SharedDestination, DestinationError> {
    let mut c = c.clone();
    let named = c.endpoint.is_some() || c.storage_write_endpoint.is_some();
    c.authentication = key(c.authentication.as_ref(), t, named)?;
    // Chosen by the endpoint the tenant named, not by its route (always
    // plain HTTP to the host's own proxy).
    let emulator = c
        .storage_write_endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("http://"));
    c.append_connections.get_or_insert(match emulator {
        true => AppendConnections::PerAppend,
        false => AppendConnections::PerTable,
    });
    let mut routes = Vec::new();
    c.endpoint = Some(route(t, c.endpoint.as_deref(), tables::DEFAULT_ENDPOINT, &mut routes).await?);
    c.storage_write_endpoint = Some(
        route(
            t,
            c.storage_write_endpoint.as_deref(),
            streaming_v2::DEFAULT_ENDPOINT,
            &mut routes,
        )
        .await?,
    );
    Ok(Charged::wrap(super::build_streaming_v2(&c).await?, t, routes))
}

/// The endpoint the tenant named (else Google's), routed; the route is
/// kept in `routes`.
async fn route(
    t: &Confined,
    named: Option<&str>,
    default: &str,
    routes: &mut Vec<Route>,
) -> Result<String, DestinationError> {
    let route = t.egress.route(named.unwrap_or(default).trim_end_matches('/')).await?;
    let url = route.url.clone();
    routes.push(route);
    Ok(url)
}

/// The key from the tenant's secrets. Without one, only endpoints the
/// tenant named are used (anonymously, as with an emulator).
fn key(auth: Option<&Authentication>, t: &Confined, named: bool) -> Result<Option<Authentication>, DestinationError> {
    let written = auth.map(|a| a.service_account_key.trim()).unwrap_or_default();
    if written.is_empty() {
        if !named {
            return Err(DestinationError::Fatal(format!(
                "authentication.service_account_key: {} has no credentials here; give secret://NAME (a secret \
                 holding a service account key): the host's own credentials are never used for a tenant",
                t.owner
            )));
        }
        return Ok(None);
    }
    let name = secret::reference(written).ok_or_else(|| {
        DestinationError::Fatal(
            "authentication.service_account_key: give secret://NAME, not the key itself (a pipeline file is shown \
             to whoever reads it)"
                .into(),
        )
    })?;
    let value = t
        .secrets
        .get(name)
        .map_err(|e| DestinationError::Fatal(format!("authentication.service_account_key: {e}")))?;
    Ok(Some(Authentication {
        service_account_key: value.to_string(),
    }))
}

/// Outside `serve` a `secret://` reference names nothing: said plainly,
/// rather than as a key that is not JSON.
pub fn unconfined(auth: Option<&Authentication>) -> Result<(), DestinationError> {
    match auth.and_then(|a| secret::reference(&a.service_account_key)) {
        Some(name) => Err(DestinationError::Fatal(format!(
            "authentication.service_account_key: secret://{name} names a `bizon-host serve` tenant's secret; \
             here give the key (or env://VAR)"
        ))),
        None => Ok(()),
    }
}
