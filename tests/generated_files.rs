//! The committed infrastructure and table docs are exactly what the row types generate.

#[test]
fn committed_generated_files_match_the_code() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for f in cas_sentinel::testing::schema::generate::files(&readme) {
        let path = format!("{}/{}", env!("CARGO_MANIFEST_DIR"), f.path);
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}; run scripts/generate"));
        assert!(
            on_disk == f.content,
            "{} drifted from src/schema/: run scripts/generate and commit the result",
            f.path
        );
    }
}

#[test]
fn every_stream_flows_to_its_custom_table_with_every_column_declared() {
    use cas_sentinel::testing::model::DataType;
    let streams = cas_sentinel::testing::schema::generate::dcr_streams();
    let tables = cas_sentinel::testing::schema::generate::tables();
    for dt in DataType::ALL {
        let decl = &streams["streamDeclarations"][dt.default_stream()]["columns"];
        let table = &tables[dt.table()]["columns"];
        assert_eq!(
            decl.as_array().unwrap().len(),
            table.as_array().unwrap().len(),
            "{dt}"
        );
        assert!(streams["dataFlows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["outputStream"] == format!("Custom-{}", dt.table())));
        assert_eq!(decl[0]["name"], "TimeGenerated");
        assert_eq!(decl[0]["type"], "datetime");
    }
}

#[test]
fn the_bicep_builds_tables_and_the_dcr_from_the_generated_files_and_runs_a_custom_handler() {
    let bicep = std::fs::read_to_string(format!("{}/infra/main.bicep", env!("CARGO_MANIFEST_DIR")))
        .unwrap();
    assert!(bicep.contains("loadJsonContent('generated/tables.json')"));
    assert!(bicep.contains("loadJsonContent('generated/dcr-streams.json')"));
    assert!(bicep.contains("name: 'custom'") && bicep.contains("version: '1.0'"));
    assert!(bicep.contains("allowSharedKeyAccess: false"));
    for setting in [
        "AzureWebJobsStorage__accountName",
        "AzureWebJobsStorage__credential",
        "SENTINEL_DCR_IMMUTABLE_ID",
        "SENTINEL_INGESTION_ENDPOINT",
        "CAS_API_URL",
        "CAS_QUEUE_NAME",
    ] {
        assert!(
            bicep.contains(&format!("name: '{setting}'")),
            "{setting} not set by the template"
        );
    }
}

#[test]
fn every_kql_function_is_deployed_under_its_own_name() {
    let root = env!("CARGO_MANIFEST_DIR");
    let bicep = std::fs::read_to_string(format!("{root}/infra/main.bicep")).unwrap();
    let tables = std::fs::read_to_string(format!("{root}/infra/tables.bicep")).unwrap();
    assert!(tables.contains("functionAlias: f.key") && tables.contains("savedSearches@"));
    let mut n = 0;
    for e in std::fs::read_dir(format!("{root}/infra/sentinel/functions")).unwrap() {
        let p = e.unwrap().path();
        let stem = p.file_stem().unwrap().to_string_lossy().to_string();
        let line = format!("{stem}: loadTextContent('sentinel/functions/{stem}.kql')");
        assert!(bicep.contains(&line), "main.bicep deploys {}", p.display());
        n += 1;
    }
    assert_eq!(n, 3);
}

#[test]
fn every_alert_query_is_deployed_with_its_threshold_as_a_parameter() {
    let root = env!("CARGO_MANIFEST_DIR");
    let monitor = std::fs::read_to_string(format!("{root}/infra/monitor.bicep")).unwrap();
    let main = std::fs::read_to_string(format!("{root}/infra/main.bicep")).unwrap();
    assert!(main.contains("module monitor 'monitor.bicep'"));
    let mut n = 0;
    for e in std::fs::read_dir(format!("{root}/infra/monitor/alerts")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            monitor.contains(&format!("loadTextContent('monitor/alerts/{name}')")),
            "{name} is deployed"
        );
        let text = std::fs::read_to_string(&p).unwrap();
        // A threshold is a `let name = number;` line that the Bicep replaces with its parameter.
        for line in text
            .lines()
            .filter(|l| l.starts_with("let ") && l.ends_with(';') && !l.contains('|'))
        {
            let var = line.trim_start_matches("let ").split(' ').next().unwrap();
            assert!(
                monitor.contains(&format!("'{line}', 'let {var} = ${{{var}}};'")),
                "{name}: {line} is not a parameter"
            );
            assert!(monitor.contains(&format!("param {var} int")), "{var}");
        }
        n += 1;
    }
    assert_eq!(n, 6);
}
