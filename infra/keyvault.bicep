// The Key Vault for the legacy CAS API token, read by the function app through a Key
// Vault reference with its user-assigned identity (RBAC, no access policies).

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
     checkov:skip=CKV_AZURE_109:The function app reaches the vault over its public endpoint (no VNet); the firewall denies by default and lets trusted Azure services through, and access is by Entra RBAC only.
     checkov:skip=CKV_AZURE_189:As above: public network access is needed without VNet integration.
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
    enablePurgeProtection: true
    softDeleteRetentionInDays: 90
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Deny'
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
