// The custom tables in the Sentinel workspace, from infra/generated/tables.json.

@description('Name of the Log Analytics workspace (in this module\'s resource group).')
param workspaceName string

@description('Table name -> { columns: [ { name, type, description } ] }, as generated.')
param tables object

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
