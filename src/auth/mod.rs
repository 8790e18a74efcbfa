//! Entra ID credentials (client secret or managed identity) through `azure_identity`,
//! which caches tokens and refreshes them before they expire.

use crate::config::{Credential, IdentitySettings};
use azure_core::credentials::TokenCredential;
use azure_identity::{
    ClientSecretCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId,
};
use std::sync::Arc;

#[cfg(feature = "sim")]
pub(crate) mod sim;

/// The scope of a token for the Defender for Cloud Apps API.
pub(crate) const CAS_SCOPE: &str = "05a65629-4c1b-48c1-a78b-804c4abdd4af/.default";

/// A credential could not be built or could not produce a token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The identity settings do not make a credential.
    #[error("cannot build the Entra credential: {0}")]
    Build(String),
    /// The token endpoint refused or could not be reached.
    #[error("could not get an Entra token for {scope}: {message}")]
    Token {
        /// The scope asked for.
        scope: String,
        /// What the credential said (never contains the token).
        message: String,
    },
}

/// Builds the process's Entra credential: a client secret when `AZURE_CLIENT_SECRET` is
/// set; otherwise managed identity (user-assigned when `AZURE_CLIENT_ID` is set), or on a
/// laptop the operator's Azure CLI login (see [`describe`]).
pub fn credential(identity: &IdentitySettings) -> Result<Arc<dyn TokenCredential>, AuthError> {
    if let Some(secret) = &identity.client_secret {
        let tenant = identity.tenant_id.as_deref().ok_or_else(|| {
            AuthError::Build("AZURE_CLIENT_SECRET is set but AZURE_TENANT_ID is not".into())
        })?;
        let client = identity.client_id.clone().ok_or_else(|| {
            AuthError::Build("AZURE_CLIENT_SECRET is set but AZURE_CLIENT_ID is not".into())
        })?;
        let options = azure_identity::ClientSecretCredentialOptions {
            client_options: client_options(),
        };
        let cred = ClientSecretCredential::new(
            tenant,
            client,
            azure_core::credentials::Secret::new(secret.expose().to_string()),
            Some(options),
        )
        .map_err(|e| AuthError::Build(e.to_string()))?;
        return Ok(cred);
    }
    if identity.without_secret == Credential::Federated {
        return federated(identity);
    }
    if identity.without_secret == Credential::AzureCli {
        let options = azure_identity::AzureCliCredentialOptions {
            tenant_id: identity.tenant_id.clone(),
            ..Default::default()
        };
        return azure_identity::AzureCliCredential::new(Some(options))
            .map(|c| c as Arc<dyn TokenCredential>)
            .map_err(|e| AuthError::Build(e.to_string()));
    }
    Ok(managed_identity(identity.client_id.clone())?)
}

/// The user-assigned identity `client_id`, or the system-assigned one.
fn managed_identity(
    client_id: Option<String>,
) -> Result<Arc<ManagedIdentityCredential>, AuthError> {
    let options = ManagedIdentityCredentialOptions {
        user_assigned_id: client_id.map(UserAssignedId::ClientId),
        client_options: client_options(),
    };
    ManagedIdentityCredential::new(Some(options)).map_err(|e| AuthError::Build(e.to_string()))
}

/// The scope a managed identity's token must have to be an app's client assertion:
/// Entra's token-exchange audience, which a federated credential of the app names.
pub(crate) const TOKEN_EXCHANGE_SCOPE: &str = "api://AzureADTokenExchange/.default";

/// The app `AZURE_CLIENT_ID` in `AZURE_TENANT_ID`, signed in by `azure_identity`'s own
/// client-assertion credential with a token of the deployment's managed identity as the
/// assertion (Microsoft's "workload identity federation" with a managed identity). The
/// token it asks for is the customer tenant's; only the assertion is ours.
fn federated(identity: &IdentitySettings) -> Result<Arc<dyn TokenCredential>, AuthError> {
    let (Some(tenant), Some(app)) = (&identity.tenant_id, &identity.client_id) else {
        return Err(AuthError::Build(
            "CAS_CREDENTIAL=federated needs AZURE_TENANT_ID and AZURE_CLIENT_ID".into(),
        ));
    };
    let signer = managed_identity(identity.federated_identity.clone())?;
    let options = azure_identity::ClientAssertionCredentialOptions {
        client_options: client_options(),
    };
    let cred = azure_identity::ClientAssertionCredential::new(
        tenant.clone(),
        app.clone(),
        IdentityAssertion(signer),
        Some(options),
    )
    .map_err(|e| AuthError::Build(e.to_string()))?;
    Ok(cred)
}

/// A managed identity's token for [`TOKEN_EXCHANGE_SCOPE`], as a client assertion. The
/// identity's credential caches it, and `azure_identity` asks again only when the app's
/// own token is due, so this costs one identity call an hour.
#[derive(Debug)]
pub(crate) struct IdentityAssertion(pub(crate) Arc<dyn TokenCredential>);

#[async_trait::async_trait]
impl azure_identity::ClientAssertion for IdentityAssertion {
    async fn secret(
        &self,
        _: Option<azure_core::http::ClientMethodOptions<'_>>,
    ) -> azure_core::Result<String> {
        // Outside Azure there is no managed identity to sign with: say so, or an operator
        // running `validate` from a laptop reads only an IMDS connection error.
        let t = self
            .0
            .get_token(&[TOKEN_EXCHANGE_SCOPE], None)
            .await
            .map_err(|e| {
                azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    format!(
                        "the deployment's managed identity could not sign the federated \
                         assertion (it has one only inside Azure: run this in the function \
                         app): {e}"
                    ),
                )
            })?;
        Ok(t.token.secret().to_string())
    }
}

/// Token requests retry for at most 15 s: past that, failing the invocation (so the host
/// redelivers it later) beats spending the invocation's budget on a token endpoint outage.
fn client_options() -> azure_core::http::ClientOptions {
    use azure_core::http::{ExponentialRetryOptions, RetryOptions};
    azure_core::http::ClientOptions {
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            max_retries: 4,
            max_total_elapsed: time::Duration::seconds(15),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Which identity the settings sign in with, in words for the operator.
pub(crate) fn describe(identity: &IdentitySettings) -> String {
    match (
        &identity.client_secret,
        identity.without_secret,
        &identity.client_id,
    ) {
        (Some(_), _, id) => format!(
            "the Entra app {} with its client secret",
            id.as_deref().unwrap_or("?")
        ),
        (None, Credential::Federated, id) => format!(
            "the Entra app {} in tenant {}, signed in by the deployment's managed identity",
            id.as_deref().unwrap_or("?"),
            identity.tenant_id.as_deref().unwrap_or("?")
        ),
        (None, Credential::AzureCli, _) => {
            "your Azure CLI login (`az login`; `az account show` says which account)".into()
        }
        (None, Credential::ManagedIdentity, Some(id)) => {
            format!("the user-assigned managed identity {id}")
        }
        (None, Credential::ManagedIdentity, None) => "the system-assigned managed identity".into(),
    }
}

/// A credential whose cached tokens can be dropped. `azure_identity` caches each token
/// until five minutes before it expires and offers no way to drop one, so a token a
/// service refuses (revoked, or rejected early through clock skew) would otherwise be sent
/// on every call for up to an hour, failing each. [`Renewable::forget`] builds the inner
/// credential again, with an empty cache, so the next call fetches a new token.
pub struct Renewable {
    make: Box<dyn Fn() -> Result<Arc<dyn TokenCredential>, AuthError> + Send + Sync>,
    /// The credential in use, and how many times it was built before it.
    current: std::sync::Mutex<(u64, Arc<dyn TokenCredential>)>,
}

/// A bearer token, and which build of the credential gave it.
pub struct Token {
    /// The token itself (never logged).
    pub secret: String,
    /// The credential build it came from: what [`Renewable::forget`] takes.
    pub generation: u64,
}

impl Renewable {
    /// A credential built now by `make`, and again by it after each `forget`.
    pub fn new(
        make: impl Fn() -> Result<Arc<dyn TokenCredential>, AuthError> + Send + Sync + 'static,
    ) -> Result<Self, AuthError> {
        let first = make()?;
        Ok(Renewable {
            make: Box::new(make),
            current: std::sync::Mutex::new((0, first)),
        })
    }

    fn current(&self) -> (u64, Arc<dyn TokenCredential>) {
        let c = self.current.lock().unwrap_or_else(|p| p.into_inner());
        (c.0, c.1.clone())
    }

    /// A bearer token for `scope` (cached by the credential).
    pub async fn token(&self, scope: &str) -> Result<Token, AuthError> {
        let (generation, credential) = self.current();
        let secret = bearer(credential.as_ref(), scope).await?;
        Ok(Token { secret, generation })
    }

    /// A service refused a token of build `generation`: the next token is fetched anew.
    /// Concurrent refusals of the same token build the credential once.
    pub fn forget(&self, generation: u64) {
        let mut c = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if c.0 != generation {
            return; // already renewed by another call
        }
        match (self.make)() {
            Ok(fresh) => *c = (generation + 1, fresh),
            // Building is local (no network call); were it to fail, the old credential
            // stays, and its token expires in time.
            Err(e) => tracing::error!("could not renew the Entra credential: {e}"),
        }
    }
}

impl std::fmt::Debug for Renewable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Renewable(generation {})", self.current().0)
    }
}

/// The storage SDK and the CAS and Graph clients take the credential as it is.
#[async_trait::async_trait]
impl TokenCredential for Renewable {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        let (_, credential) = self.current();
        credential.get_token(scopes, options).await
    }
}

/// Gets a bearer token for `scope` (cached by the credential).
pub async fn bearer(credential: &dyn TokenCredential, scope: &str) -> Result<String, AuthError> {
    credential
        .get_token(&[scope], None)
        .await
        .map(|t| t.token.secret().to_string())
        .map_err(|e| AuthError::Token {
            scope: scope.to_string(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "sim")]
    #[tokio::test]
    async fn the_assertion_is_the_identitys_token_for_entras_token_exchange() {
        use azure_identity::ClientAssertion;
        let assertion = IdentityAssertion(Arc::new(sim::SimCredential));
        let token = assertion.secret(None).await.unwrap();
        // The simulated identity's tokens name their audience: Entra accepts an assertion
        // only for api://AzureADTokenExchange, which the app's federated credential names.
        assert!(
            token.starts_with("sim|api://AzureADTokenExchange|"),
            "{token}"
        );
    }

    /// An identity with no token to give: the function app's identity, asked from a laptop.
    #[derive(Debug)]
    struct NoIdentity;

    #[async_trait::async_trait]
    impl TokenCredential for NoIdentity {
        async fn get_token(
            &self,
            _: &[&str],
            _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
        ) -> azure_core::Result<azure_core::credentials::AccessToken> {
            Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Io,
                "connection refused (169.254.169.254:80)",
            ))
        }
    }

    #[tokio::test]
    async fn an_assertion_with_no_identity_to_sign_says_where_one_exists() {
        use azure_identity::ClientAssertion;
        let err = IdentityAssertion(Arc::new(NoIdentity))
            .secret(None)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("only inside Azure"), "{err}");
        assert!(
            err.contains("connection refused"),
            "the cause is kept: {err}"
        );
    }

    #[test]
    fn a_federated_identity_is_built_without_a_network_call_and_described() {
        let identity = IdentitySettings {
            tenant_id: Some("44444444-4444-4444-8444-444444444444".into()),
            client_id: Some("00000000-aaaa-4bbb-8ccc-000000000001".into()),
            without_secret: Credential::Federated,
            ..Default::default()
        };
        assert!(credential(&identity).is_ok());
        let d = describe(&identity);
        assert!(
            d.contains("00000000-aaaa-4bbb-8ccc-000000000001")
                && d.contains("44444444-4444-4444-8444-444444444444")
                && d.contains("managed identity"),
            "{d}"
        );
        let no_tenant = IdentitySettings {
            tenant_id: None,
            ..identity
        };
        assert!(credential(&no_tenant).is_err());
    }
}
