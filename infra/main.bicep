// cas-sentinel: everything the function app needs, in one resource group, wired for
// managed identity. Deploy with
//   az deployment group create -g <rg> -f infra/main.bicep -p @infra/main.parameters.example.json
// then publish the package built by scripts/package (see docs/deploy.md).
//
// The custom tables and the DCR stream declarations come from infra/generated/, which
// `scripts/generate` writes from the Rust row types (a test fails when they drift).

targetScope = 'resourceGroup'

@description('Name prefix for the resources (lowercase letters and digits, 3-11 characters).')
@minLength(3)
@maxLength(11)
param prefix string

@description('Location of the resources.')
param location string = resourceGroup().location

@description('Resource id of the Log Analytics workspace that Microsoft Sentinel uses.')
param workspaceResourceId string

@description('Defender for Cloud Apps API URL, e.g. https://contoso.us2.portal.cloudappsecurity.com')
param casApiUrl string

@description('Data types to forward: comma list of alerts, activities, discovery.')
param casDataTypes string = 'alerts,activities,discovery'

@description('Legacy CAS API token. Leave empty to use the managed identity (recommended); when set, it is stored in a Key Vault and read through a Key Vault reference.')
@secure()
param casApiToken string = ''

@description('Fan-out queue name.')
param queueName string = 'cas-batches'

@description('PollCas timer schedule (NCRONTAB, six fields). Every 2 minutes: a caught-up poll costs about one CAS request per data type, 1.5 a minute of the tenant\'s 30, and a record reaches Sentinel about 2 to 4 minutes after CAS stored it.')
param casSchedule string = '0 */2 * * * *'

@description('Most instances Flex Consumption may scale the queue consumers out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Days a batch\'s state (and its spilled payload and duplicate note) is kept after its last change. A redelivered or replayed message is skipped as sent only while its batch state exists: queue and poison messages live 7 days, so keep this well above 7; a message imported from an export file older than this is sent again.')
@minValue(8)
param batchStateRetentionDays int = 30

@description('Thresholds of the analytics rules in infra/sentinel/rules (docs/content.md). lookbackDays also sets those rules\' queryPeriod, which Sentinel allows up to 14 days (a larger value is refused at deployment).')
param ruleThresholds object = {
  downloadThreshold: 200
  lookbackDays: 14
  maximumScore: 3
}

@description('E-mail address for the connector-health alerts (docs/operations.md); empty for none.')
param alertEmail string = ''

@description('Connector-health alerts: hours with CAS data but no rows in its table; checkpoint lag in minutes; failed invocations an hour; minutes without a finished PollCas run.')
param alertThresholds object = {
  noRowsHours: 6
  lagThresholdMinutes: 60
  failureThreshold: 3
  silentMinutes: 30
}

var suffix = uniqueString(resourceGroup().id, prefix)
var storageName = take(toLower('${prefix}st${suffix}'), 24)
var deploymentContainer = 'app-package'
var useKeyVault = !empty(casApiToken)
var tables = loadJsonContent('generated/tables.json')
var streams = loadJsonContent('generated/dcr-streams.json')
// The KQL functions that present the tables in the shapes Sentinel content reads
// (SecurityAlert, McasShadowItReporting, CloudAppEvents); tests/kql.rs checks them.
var kqlFunctions = {
  McasSecurityAlert: loadTextContent('sentinel/functions/McasSecurityAlert.kql')
  McasShadowIt: loadTextContent('sentinel/functions/McasShadowIt.kql')
  McasCloudAppEvents: loadTextContent('sentinel/functions/McasCloudAppEvents.kql')
}
var workspaceParts = split(workspaceResourceId, '/')
var workspaceSubscriptionId = workspaceParts[2]
var workspaceResourceGroup = workspaceParts[4]
var workspaceName = last(workspaceParts)

// Built-in role definition ids.
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${prefix}-id-${suffix}'
  location: location
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  /* Checks skipped, each with its reason:
     checkov:skip=CKV_AZURE_35:Flex Consumption without a virtual network reaches its storage over the public endpoint; access needs an Entra token (shared keys are disabled). Add a VNet integration and private endpoints to close it.
     checkov:skip=CKV_AZURE_59:As above: public network access is required without VNet integration; every request is authorised by Entra ID.
     checkov:skip=CKV_AZURE_206:Locally redundant storage is enough: the queue and checkpoints are transient working state, and CAS remains the source of truth.
     checkov:skip=CKV2_AZURE_1:Customer-managed keys are not needed for transient batches; Microsoft-managed encryption at rest applies.
     checkov:skip=CKV2_AZURE_33:Private endpoints need a virtual network, which this template does not create (see CKV_AZURE_35).
     checkov:skip=CKV2_AZURE_40:Shared key access is disabled (allowSharedKeyAccess: false); this check does not read that property.
     checkov:skip=CKV2_AZURE_41:No SAS is issued for this account; shared keys are disabled, so no SAS can be signed.
     checkov:skip=CKV2_AZURE_38:Soft delete is not useful for transient queue batches and sent markers.
     checkov:skip=CKV2_AZURE_47:Blob anonymous access is disabled by allowBlobPublicAccess: false.
     checkov:skip=CKV_AZURE_43:The name is computed (take(toLower(prefix + 'st' + uniqueString()), 24)): lowercase letters and digits, 3-24 long; the check cannot evaluate expressions.
     checkov:skip=CKV_AZURE_33:Queue service logging is configured through diagnostic settings in the workspace, not classic storage analytics.
  */
  name: storageName
  location: location
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// Batch states are written once per batch and never read after its messages are gone: a
// busy tenant makes millions a year. The lifecycle rule deletes them (with the spilled
// payloads and the notes of possible duplicates) once no message can name them any more.
resource batchStateLifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'expire-batch-state'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                'cas-sentinel/batches/'
                'cas-sentinel/payloads/'
                'cas-sentinel/uncertain/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: batchStateRetentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
}

resource packageContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainer
  properties: {
    publicAccess: 'None'
  }
}

// The host keeps leases, timer state and the deployment package in blobs; the app its
// checkpoints and markers. Blob Data Owner is what identity-based AzureWebJobsStorage needs.
resource storageBlobRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
  }
}

resource storageQueueRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
  }
}

// The Sentinel workspace, which may be in another resource group or subscription (a central
// Sentinel subscription is common): the tables and content go there, and the DCR must be in
// its region.
resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
  scope: resourceGroup(workspaceSubscriptionId, workspaceResourceGroup)
}

module customTables 'tables.bicep' = {
  name: 'cas-sentinel-tables'
  scope: resourceGroup(workspaceSubscriptionId, workspaceResourceGroup)
  params: {
    workspaceName: workspaceName
    tables: tables
    functions: kqlFunctions
    content: loadJsonContent('generated/sentinel-content.json')
    ruleThresholds: ruleThresholds
    workbook: loadJsonContent('sentinel/workbook.json')
    connector: loadJsonContent('sentinel/connector.json')
    location: location
  }
}

// A DCR must be in its destination workspace's region, wherever the app is.
resource dcr 'Microsoft.Insights/dataCollectionRules@2023-03-11' = {
  name: '${prefix}-dcr-${suffix}'
  location: workspace.location
  kind: 'Direct'
  properties: {
    streamDeclarations: streams.streamDeclarations
    destinations: {
      logAnalytics: [
        {
          name: 'sentinel'
          workspaceResourceId: workspaceResourceId
        }
      ]
    }
    dataFlows: streams.dataFlows
  }
  dependsOn: [
    customTables
  ]
}

resource dcrPublisherRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dcr.id, identity.id, roles.monitoringMetricsPublisher)
  scope: dcr
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${prefix}-ai-${suffix}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspaceResourceId
    DisableLocalAuth: true
  }
}

resource insightsPublisherRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: insights
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

// Only when a legacy token is given: the vault that holds it.
module vault 'keyvault.bicep' = if (useKeyVault) {
  name: 'cas-sentinel-keyvault'
  params: {
    // A vault name must start with a letter (a prefix may not), and stays the same for a
    // redeploy into the same resource group.
    name: 'kv${uniqueString(resourceGroup().id, prefix, 'vault')}'
    location: location
    casApiToken: casApiToken
    readerPrincipalId: identity.properties.principalId
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  /* Checks skipped, each with its reason:
     checkov:skip=CKV_AZURE_211:Flex Consumption (FC1) is a consumption plan; the check expects a dedicated SKU.
     checkov:skip=CKV_AZURE_212:Flex Consumption scales instances itself (maximumInstanceCount); zone-redundant minimums do not apply.
     checkov:skip=CKV_AZURE_225:As above: zone redundancy is not a setting of this plan.
  */
  name: '${prefix}-plan-${suffix}'
  location: location
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

var baseSettings = [
  { name: 'AzureWebJobsStorage__accountName', value: storage.name }
  { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
  { name: 'AzureWebJobsStorage__clientId', value: identity.properties.clientId }
  { name: 'AZURE_CLIENT_ID', value: identity.properties.clientId }
  { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
  { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'ClientId=${identity.properties.clientId};Authorization=AAD' }
  { name: 'CAS_API_URL', value: casApiUrl }
  { name: 'CAS_DATA_TYPES', value: casDataTypes }
  { name: 'CAS_QUEUE_NAME', value: queueName }
  { name: 'CAS_SCHEDULE', value: casSchedule }
  { name: 'SENTINEL_INGESTION_ENDPOINT', value: dcr.properties.endpoints.logsIngestion }
  { name: 'SENTINEL_DCR_IMMUTABLE_ID', value: dcr.properties.immutableId }
  // The DCR declares the ASIM streams (generated/dcr-streams.json): activities go to the
  // native ASIM tables too.
  { name: 'SENTINEL_ASIM', value: 'on' }
]
var tokenSetting = useKeyVault ? [
  { name: 'CAS_API_TOKEN', value: '@Microsoft.KeyVault(SecretUri=${vault.outputs.secretUri})' }
] : []

resource app 'Microsoft.Web/sites@2024-04-01' = {
  /* Checks skipped, each with its reason:
     checkov:skip=CKV_AZURE_56:App Service authentication guards HTTP triggers; this app has none (timer and queue triggers only).
     checkov:skip=CKV_AZURE_70:httpsOnly is set below; this check targets a property path of older API versions.
     checkov:skip=CKV_AZURE_71:A user-assigned managed identity is set below; the check looks for a system-assigned one.
     checkov:skip=CKV_AZURE_221:Public network access is needed for deployments without a VNet; the app serves no HTTP triggers.
     checkov:skip=CKV_AZURE_222:Without VNet integration, publishing and the host's own management traffic need the public endpoint; the app serves no HTTP triggers.
     checkov:skip=CKV_AZURE_17:Client certificates protect HTTP endpoints; this app has none (timer and queue triggers only).
     checkov:skip=CKV_AZURE_212:Flex Consumption scales instances itself (maximumInstanceCount); a fixed minimum does not apply.
     checkov:skip=CKV_AZURE_213:There is no HTTP endpoint to probe; the Functions host checks the custom handler itself (GET / on the handler port).
     checkov:skip=CKV_AZURE_145:The function app serves no HTTP endpoints, so there is nothing for client certificates to protect.
  */
  name: '${prefix}-func-${suffix}'
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identity.id
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: concat(baseSettings, tokenSetting)
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: 512
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
  }
  dependsOn: [
    storageBlobRole
    storageQueueRole
    packageContainer
  ]
}

// No FTP and no basic-auth publishing: `func azure functionapp publish` uses Entra.
resource ftpPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'scm'
  properties: {
    allow: false
  }
}

output functionAppName string = app.name
output managedIdentityPrincipalId string = identity.properties.principalId
output managedIdentityClientId string = identity.properties.clientId
output dcrImmutableId string = dcr.properties.immutableId
output logsIngestionEndpoint string = dcr.properties.endpoints.logsIngestion
output storageAccountName string = storage.name

// Alert rules that say when the connector stops (docs/operations.md).
module monitor 'monitor.bicep' = {
  name: 'cas-sentinel-monitor'
  params: {
    location: location
    workspaceResourceId: workspaceResourceId
    prefix: prefix
    alertEmail: alertEmail
    noRowsHours: alertThresholds.noRowsHours
    lagThresholdMinutes: alertThresholds.lagThresholdMinutes
    failureThreshold: alertThresholds.failureThreshold
    silentMinutes: alertThresholds.silentMinutes
  }
}
