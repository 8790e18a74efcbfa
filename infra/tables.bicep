// The custom tables in the Sentinel workspace, from infra/generated/tables.json, and the
// KQL functions over them (saved searches with a function alias), from
// infra/sentinel/functions/.

@description('Name of the Log Analytics workspace (in this module\'s resource group).')
param workspaceName string

@description('Table name -> { columns: [ { name, type, description } ] }, as generated.')
param tables object

@description('Function name -> KQL body, from infra/sentinel/functions/*.kql.')
param functions object

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
