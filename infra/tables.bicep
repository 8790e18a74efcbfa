// What cas-sentinel puts in the Sentinel workspace: the custom tables (from
// infra/generated/tables.json), the KQL functions over them (saved searches with a function
// alias, from infra/sentinel/functions/), the analytics rules and hunting queries (from
// infra/sentinel/{rules,hunting}/, as infra/generated/sentinel-content.json), the workbook and
// the data connector's page (infra/sentinel/connector.json).
// The workspace must already have Microsoft Sentinel enabled.

@description('Name of the Log Analytics workspace (in this module\'s resource group).')
param workspaceName string

@description('Table name -> { columns: [ { name, type, description } ] }, as generated.')
param tables object

@description('Function name -> KQL body, from infra/sentinel/functions/*.kql.')
param functions object

@description('Analytics rules and hunting queries, from infra/generated/sentinel-content.json.')
param content object

@description('The analytics rules\' thresholds, by the name of their `let` line.')
param ruleThresholds object

@description('The workbook, from infra/sentinel/workbook.json.')
param workbook object

@description('The data connector\'s page (connectorUiConfig), from infra/sentinel/connector.json.')
param connector object

@description('Azure region of the workbook.')
param location string

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource table 'Microsoft.OperationalInsights/workspaces/tables@2022-10-01' = [for t in items(tables): {
  parent: workspace
  name: t.key
  properties: {
    plan: 'Analytics'
    schema: {
      name: t.key
      columns: t.value.columns
    }
  }
}]

// A function's body names the tables, so they exist first.
resource function 'Microsoft.OperationalInsights/workspaces/savedSearches@2020-08-01' = [for f in items(functions): {
  parent: workspace
  name: 'cas-sentinel-${toLower(f.key)}'
  properties: {
    category: 'cas-sentinel'
    displayName: f.key
    functionAlias: f.key
    query: f.value
    version: 2
  }
  dependsOn: [
    table
  ]
}]

// Each rule's thresholds are `let name = value;` lines in its query (content.js lists them
// in each rule's `parameters`); the deployment's values replace them. tests/kql.rs checks
// that every such line of every rule is replaced here.
resource rule 'Microsoft.SecurityInsights/alertRules@2023-02-01' = [for r in content.rules: {
  scope: workspace
  name: r.id
  kind: r.kind
  properties: union(r.properties, {
    query: replace(replace(replace(r.properties.query,
      'let downloadThreshold = 200;', 'let downloadThreshold = ${ruleThresholds.downloadThreshold};'),
      'let lookbackDays = 14;', 'let lookbackDays = ${ruleThresholds.lookbackDays};'),
      'let maximumScore = 3;', 'let maximumScore = ${ruleThresholds.maximumScore};')
    // A rule that looks back lookbackDays must be allowed to read that far: Sentinel gives
    // a scheduled query only the data within its queryPeriod.
    queryPeriod: contains(r.parameters, 'lookbackDays') ? 'P${ruleThresholds.lookbackDays}D' : r.properties.queryPeriod
  })
  dependsOn: [
    function
  ]
}]

resource hunting 'Microsoft.OperationalInsights/workspaces/savedSearches@2020-08-01' = [for h in content.hunting: {
  parent: workspace
  name: 'cas-sentinel-hunting-${h.id}'
  properties: h.properties
  dependsOn: [
    function
  ]
}]

// The connector's page on Sentinel's Data connectors blade: what it writes, whether rows
// arrive, the permissions and the setup steps. Its name is the connectorId the rules' and
// hunting queries' requiredDataConnectors name. GenericUI (a UI-only definition, for
// connectors that run outside Sentinel) is offered by the preview API versions only.
resource connector 'Microsoft.SecurityInsights/dataConnectors@2021-03-01-preview' = {
  scope: workspace
  name: 'CasSentinel'
  kind: 'GenericUI'
  properties: {
    connectorUiConfig: union(connector, { id: 'CasSentinel' })
  }
  dependsOn: [
    function
  ]
}

resource workbookResource 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(workspace.id, 'cas-sentinel-workbook')
  location: location
  kind: 'shared'
  properties: {
    displayName: 'Microsoft Defender for Cloud Apps (cas-sentinel)'
    category: 'sentinel'
    sourceId: workspace.id
    serializedData: string(workbook)
  }
  dependsOn: [
    function
  ]
}
