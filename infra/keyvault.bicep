// The Key Vault for the legacy CAS API token, read by the function app through a Key
// Vault reference with its user-assigned identity (RBAC, no access policies).
//
// Reachability: a function app's Key Vault reference is not one of the "trusted Microsoft
// services" a vault firewall lets through, so a vault that denies public network access
// is only reachable from an app with VNet integration and a private endpoint, which this
// template does not create (Flex Consumption without a VNet). The vault therefore accepts
// connections from anywhere and authorizes by Entra RBAC alone: only the app's identity
// holds Key Vault Secrets User, and the vault holds this one secret. With a VNet, set
// publicNetworkAccess to Disabled and add a private endpoint.
//
// Redeploys: purge protection would keep a deleted vault's name taken for 90 days; the
// token is rotatable, so soft delete (7 days) is enough, and `az keyvault purge` frees the
// name at once.

@description('Vault name.')
param name string

@description('Location.')
param location string

@description('The legacy CAS API token.')
@secure()
param casApiToken string

@description('Principal id of the identity that reads the secret.')
param readerPrincipalId string

@description('When the secret expires: legacy tokens should be rotated, and a year forces it.')
param secretExpiry string = dateTimeAdd(utcNow(), 'P1Y')

var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  /* Checks skipped, each with its reason:
     checkov:skip=CKV_AZURE_109:Key Vault references from a function app without VNet integration are not a trusted service, so the firewall must allow them; access is by Entra RBAC only, for the app's identity alone.
     checkov:skip=CKV_AZURE_189:As above: public network access is needed without VNet integration.
     checkov:skip=CKV_AZURE_110:Purge protection would block a redeploy under the same name for 90 days after a delete; the vault holds one rotatable token.
     checkov:skip=CKV_AZURE_42:As above: soft delete (7 days) keeps it recoverable; purge protection is off on purpose.
     checkov:skip=CKV2_AZURE_32:Private endpoints need a virtual network, which this template does not create.
  */
  name: name
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'cas-api-token'
  properties: {
    value: casApiToken
    contentType: 'text/plain'
    attributes: {
      exp: dateTimeToEpoch(secretExpiry)
    }
  }
}

resource secretsRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, readerPrincipalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: readerPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

@description('The secret URI for the Key Vault reference (latest version).')
output secretUri string = secret.properties.secretUri
