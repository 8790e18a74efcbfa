// Azure Monitor alert rules that say when the connector stops: scheduled queries over the
// workspace (the custom tables, and Application Insights' AppTraces and AppRequests, which
// a workspace-based Application Insights writes there). Each query is a file in
// monitor/alerts/, checked by tests/kql.rs; its threshold is the `let` line that the
// parameters below replace.

@description('Azure region of the alert rules.')
param location string

@description('Resource id of the workspace the rules query.')
param workspaceResourceId string

@description('Name prefix of the rules.')
param prefix string

@description('E-mail address to notify; empty for no action group (the alerts still fire in the portal).')
param alertEmail string = ''

@description('Hours with records pulled from CAS but no rows in their table before alerting.')
param noRowsHours int = 6

@description('Checkpoint lag, in minutes, that raises an alert.')
param lagThresholdMinutes int = 60

@description('Failed invocations within an hour that raise an alert.')
param failureThreshold int = 3

@description('Minutes without a finished PollCas run that raise an alert.')
param silentMinutes int = 30

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: '${prefix}-alerts'
  location: 'global'
  properties: {
    groupShortName: 'cassentinel'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var rules = [
  {
    name: 'rows-stopped'
    title: 'cas-sentinel: CAS has data but a table gets no rows'
    severity: 1
    query: replace(loadTextContent('monitor/alerts/rows-stopped.kql'), 'let noRowsHours = 6;', 'let noRowsHours = ${noRowsHours};')
    dimensions: [
      'Tenant'
      'DataType'
    ]
  }
  {
    name: 'checkpoint-lag'
    title: 'cas-sentinel: checkpoint lag above threshold'
    severity: 2
    query: replace(loadTextContent('monitor/alerts/checkpoint-lag.kql'), 'let lagThresholdMinutes = 60;', 'let lagThresholdMinutes = ${lagThresholdMinutes};')
    dimensions: [
      'Tenant'
      'DataType'
    ]
  }
  {
    name: 'poison-messages'
    title: 'cas-sentinel: batches in the poison queue'
    severity: 2
    query: loadTextContent('monitor/alerts/poison-messages.kql')
    dimensions: []
  }
  {
    name: 'failed-invocations'
    title: 'cas-sentinel: repeated failed invocations'
    severity: 1
    query: replace(loadTextContent('monitor/alerts/failed-invocations.kql'), 'let failureThreshold = 3;', 'let failureThreshold = ${failureThreshold};')
    dimensions: []
  }
  {
    name: 'tenant-failing'
    title: 'cas-sentinel: one tenant\'s polls keep failing'
    severity: 1
    query: replace(loadTextContent('monitor/alerts/tenant-failing.kql'), 'let failureThreshold = 3;', 'let failureThreshold = ${failureThreshold};')
    dimensions: [
      'Tenant'
    ]
  }
  {
    name: 'poll-silent'
    title: 'cas-sentinel: PollCas has stopped running'
    severity: 1
    query: replace(loadTextContent('monitor/alerts/poll-silent.kql'), 'let silentMinutes = 30;', 'let silentMinutes = ${silentMinutes};')
    dimensions: []
  }
]

resource rule 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for r in rules: {
  name: '${prefix}-${r.name}'
  location: location
  properties: {
    displayName: r.title
    description: 'See docs/operations.md, "${r.name}": what it means and the command that fixes it.'
    severity: r.severity
    enabled: true
    scopes: [
      workspaceResourceId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    criteria: {
      allOf: [
        {
          query: r.query
          timeAggregation: 'Count'
          // One alert per value (per tenant, per data type), so a failing tenant is
          // named in the alert and the others' alerts stay quiet.
          dimensions: [for d in r.dimensions: {
            name: d
            operator: 'Include'
            values: [
              '*'
            ]
          }]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: empty(alertEmail) ? [] : [
        actionGroup.id
      ]
    }
  }
}]
