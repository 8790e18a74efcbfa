//! Records shaped as real CAS API answers are (tests/fixtures/real-shaped/, with where each
//! shape was seen), mapped by the binary's own code, give the values Sentinel's own rows of
//! the same kind hold: a query written for SecurityAlert or CloudAppEvents finds them.

use cas_sentinel::testing::model::DataType;
use cas_sentinel::testing::schema::to_row;
use serde_json::{json, Value};

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/real-shaped/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The values `tests/kql/compat/cloudappevents-real-values.kql` filters on.
#[test]
fn a_failed_sign_in_has_cloudappevents_values() {
    let row = to_row(
        DataType::Activities,
        &fixture("activity-failed-signin.json"),
    );
    assert!(row.get("MappingIssues").is_none(), "{row}");
    // The user of a failed sign-in is in failedUserData; the actor's Entra id is resolved.
    assert_eq!(row["AccountId"], "6f1e2d3c-4b5a-4968-8776-655443322110");
    assert_eq!(
        row["AccountObjectId"],
        "6f1e2d3c-4b5a-4968-8776-655443322110"
    );
    assert_eq!(row["AccountDisplayName"], "Mara Lind");
    assert_eq!(row["DeviceType"], "Other");
    assert_eq!(row["IPCategory"], "Cloud provider");
    assert_eq!(row["ISP"], "Amazon Web Services");
    assert_eq!(row["IPTags"], json!(["Amazon Web Services"]));
    assert_eq!(row["UserAgentTags"], json!(["Robot"]));
    assert_eq!(row["ActivityType"], "Failedlogin");
    assert_eq!(row["CasEventCategory"], "EVENT_CATEGORY_FAILED_LOGIN");
    assert_eq!(row["CasEventType"], "EVENT_AAD_LOGIN_FAILED");
    assert_eq!(
        (
            row["IsAdminOperation"].as_bool(),
            row["IsImpersonated"].as_bool(),
            row["IsExternalUser"].as_bool()
        ),
        (Some(false), Some(false), Some(false)),
        "booleans on every row: CAS's null is false"
    );
    let objects = row["ActivityObjects"].as_array().unwrap();
    assert_eq!(
        objects[0],
        json!({"Type": "Application", "Role": "Target object", "Name": "Office 365 Exchange Online", "Id": "00000002-0000-0ff1-ce00-000000000000"})
    );
    assert_eq!(objects[2]["Role"], "Parameter");
    assert_eq!(objects[2]["Value"], "false");
    assert_eq!(objects[3]["Role"], "Actor");
    assert_eq!(objects[3]["Type"], "User");
    assert_eq!(objects[4]["ApplicationId"], 11161);
    assert_eq!(objects[4]["ApplicationInstance"], 0);
    assert_eq!(
        (row["ObjectName"].as_str(), row["ObjectType"].as_str()),
        (Some("Office 365 Exchange Online"), Some("Application")),
        "the object is the target, not the first listed"
    );
}

#[test]
fn a_onedrive_activity_has_cloudappevents_values() {
    let row = to_row(DataType::Activities, &fixture("activity-onedrive.json"));
    assert_eq!(row["DeviceType"], "Desktop");
    assert!(row.get("IPCategory").is_none(), "category 0 is none: {row}");
    assert!(
        row.get("ISP").is_none(),
        "the text \"null\" is no ISP: {row}"
    );
    assert_eq!(row["UserAgentTags"], json!(["Outdated browser"]));
    assert_eq!(row["ActivityType"], "Basic");
    assert_eq!(row["ObjectName"], "plan.docx");
    // The actor is a UPN: its Entra id comes from the acting user's object.
    assert_eq!(row["AccountId"], "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e");
    assert_eq!(row["IsAdminOperation"], false);
}

/// The values `tests/kql/compat/securityalert-anomaly-detections.kql` and
/// `securityalert-accounts-from-entities.kql` filter on.
#[test]
fn an_alert_has_securityalert_values() {
    let row = to_row(DataType::Alerts, &fixture("alert-account-and-user.json"));
    assert_eq!(row["Status"], "New", "no resolutionStatusValue: open");
    assert_eq!(row["AlertType"], "MCAS_ALERT_ANUBIS_DETECTION_VELOCITY");
    assert_eq!(
        row["Description"],
        "The user Mara Lind ( mara@fabrikam.example ) performed failed sign in activities from a remote location that was considered a risky activity & more. See the IP address range page ."
    );
    let entities = row["Entities"].as_array().unwrap();
    let accounts: Vec<&Value> = entities.iter().filter(|e| e["Type"] == "account").collect();
    assert_eq!(accounts.len(), 1, "one account per person: {entities:?}");
    assert_eq!(
        (
            accounts[0]["Name"].as_str(),
            accounts[0]["UPNSuffix"].as_str(),
            accounts[0]["AadUserId"].as_str()
        ),
        (
            Some("mara"),
            Some("fabrikam.example"),
            Some("6f1e2d3c-4b5a-4968-8776-655443322110")
        )
    );
    let app = entities
        .iter()
        .find(|e| e["Type"] == "cloud-application")
        .unwrap();
    assert_eq!(
        (app["AppId"].as_i64(), app["InstanceId"].as_i64()),
        (Some(11161), Some(0))
    );
    assert!(
        app.get("InstanceName").is_none(),
        "CAS gives no instance name: none is made up"
    );
    assert!(entities
        .iter()
        .any(|e| e["Type"] == "ip" && e["Address"] == "198.51.100.23"));
    assert_eq!(
        row["ExtendedProperties"]["DetectorId"],
        "5e6fa96cb5172297ca756554"
    );
    assert_eq!(row["ExtendedProperties"]["Category"], "ThreatDetection");
    assert_eq!(row["CompromisedEntity"], "mara@fabrikam.example");
}
