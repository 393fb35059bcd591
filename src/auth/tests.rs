use super::*;

fn config(text: &str) -> AuthConfig {
    toml::from_str(text).expect("a valid [auth] table")
}

const TOKEN: &str = "ilt_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn with_token(principal: &str, roles: &str) -> String {
    format!(
        "[principals.{principal}]\nroles = {roles}\n[[tokens]]\nid = \"t1\"\nprincipal = \"{principal}\"\nsha256 = \"{}\"\n",
        digest_hex(TOKEN)
    )
}

#[test]
fn a_token_names_its_principal_and_nothing_else_does() {
    let auth = Authenticator::new(&config(&with_token("ops", "[\"admin\", \"auditor\"]")))
        .expect("a valid table");
    let (principal, id) = auth.by_token(TOKEN).expect("the token is known");
    assert_eq!((&*principal.name, &**id), ("ops", "t1"));
    assert_eq!(principal.roles, vec![Role::Admin, Role::Auditor]);
    assert!(auth.by_token(&TOKEN[..TOKEN.len() - 1]).is_none());
    assert!(auth.by_token("").is_none());
}

#[test]
fn new_tokens_carry_the_prefix_and_differ() {
    let (a, b) = (new_token(), new_token());
    assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
    assert_ne!(a, b);
}

#[test]
fn a_bad_table_is_refused_with_what_is_wrong() {
    let unknown = "[[tokens]]\nid = \"t1\"\nprincipal = \"nobody\"\nsha256 = \"00\"\n";
    let short = Authenticator::new(&config(unknown)).expect_err("refused");
    assert_eq!(short, AuthConfigError::BadDigest("t1".into()));
    let unknown = format!(
        "[[tokens]]\nid = \"t1\"\nprincipal = \"nobody\"\nsha256 = \"{}\"\n",
        digest_hex(TOKEN)
    );
    assert!(matches!(
        Authenticator::new(&config(&unknown)),
        Err(AuthConfigError::UnknownPrincipal { .. })
    ));
    let twice = format!(
        "{}[[tokens]]\nid = \"t1\"\nprincipal = \"ops\"\nsha256 = \"{}\"\n",
        with_token("ops", "[\"admin\"]"),
        digest_hex("another")
    );
    assert_eq!(
        Authenticator::new(&config(&twice)).expect_err("refused"),
        AuthConfigError::Duplicate("t1".into())
    );
    let none = "[principals.ops]\nroles = []\n";
    assert_eq!(
        Authenticator::new(&config(none)).expect_err("refused"),
        AuthConfigError::NoRoles("ops".into())
    );
    assert!(toml::from_str::<AuthConfig>("[principals.ops]\nroles = [\"root\"]\n").is_err());
    assert!(toml::from_str::<AuthConfig>("colour = 1\n").is_err());
}

#[test]
fn each_role_may_call_exactly_its_methods() {
    let ledger = |m: &str| format!("/imageledger.v1.ImageLedger/{m}");
    let gateway = [Role::Gateway];
    assert!(allowed(&gateway, &ledger("ShareImage")));
    assert!(allowed(&gateway, &ledger("DescribeImages")));
    assert!(!allowed(&gateway, &ledger("RegisterAccount")));
    assert!(!allowed(&gateway, &ledger("RegisterImage")));
    assert!(!allowed(&gateway, &ledger("UpdateImageState")));
    assert!(!allowed(&gateway, "/imageledger.v1.AuditLog/ReadEvents"));
    let factory = [Role::ImageFactory];
    assert!(allowed(&factory, &ledger("RegisterImage")));
    assert!(allowed(&factory, &ledger("UpdateImageState")));
    assert!(!allowed(&factory, &ledger("ShareImage")));
    assert!(allowed(&[Role::Admin], &ledger("RegisterAccount")));
    assert!(!allowed(&[Role::Admin], &ledger("ShareImage")));
    assert!(allowed(
        &[Role::Auditor],
        "/imageledger.v1.AuditLog/Subscribe"
    ));
    assert!(!allowed(&[Role::Auditor], &ledger("DescribeImages")));
    // Methods nobody lists are denied to everyone, even with every role.
    let all = [
        Role::Gateway,
        Role::ImageFactory,
        Role::Admin,
        Role::Auditor,
    ];
    assert!(!allowed(&all, &ledger("ForgetEverything")));
    assert!(!allowed(&all, "/imageledger.v2.ImageLedger/ShareImage"));
    // Health and reflection are open.
    assert!(allowed(&[], "/grpc.health.v1.Health/Check"));
    assert!(allowed(
        &[],
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    ));
}

#[test]
fn a_principal_may_hold_several_tokens_to_rotate_them() {
    let (old, new) = (new_token(), new_token());
    let table = format!(
        "[principals.ops]\nroles = [\"admin\"]\n\
         [[tokens]]\nid = \"ops-old\"\nprincipal = \"ops\"\nsha256 = \"{}\"\n\
         [[tokens]]\nid = \"ops-new\"\nprincipal = \"ops\"\nsha256 = \"{}\"\n",
        digest_hex(&old),
        digest_hex(&new)
    );
    let auth = Authenticator::new(&config(&table)).expect("a valid table");
    let (principal, id) = auth.by_token(&old).expect("the old token still works");
    assert_eq!((&*principal.name, &**id), ("ops", "ops-old"));
    let (principal, id) = auth.by_token(&new).expect("the new token works");
    assert_eq!((&*principal.name, &**id), ("ops", "ops-new"));
}

#[test]
fn a_certificate_name_belongs_to_one_principal() {
    let table = "[principals.a]\nroles = [\"gateway\"]\nsans = [\"spiffe://x/a\"]\n\
                 [principals.b]\nroles = [\"admin\"]\nsans = [\"spiffe://x/a\"]\n";
    assert_eq!(
        Authenticator::new(&config(table)).expect_err("refused"),
        AuthConfigError::SharedName("spiffe://x/a".into())
    );
    let table = "[principals.a]\nroles = [\"gateway\"]\nsans = [\"gw.internal\"]\n";
    let auth = Authenticator::new(&config(table)).expect("a valid table");
    let names = ["other.internal".to_owned(), "gw.internal".to_owned()];
    let (principal, name) = auth.by_certificate(&names).expect("one name is known");
    assert_eq!((&*principal.name, name), ("a", "gw.internal"));
    assert!(auth.by_certificate(&names[..1]).is_none());
}

fn cloud(text: &str) -> CloudApiConfig {
    toml::from_str(text).expect("the table parses")
}

#[test]
fn cloud_keys_are_checked_and_bound_to_their_account() {
    let dir = tempfile::tempdir().expect("a directory");
    let file = dir.path().join("a2");
    std::fs::write(&file, "  key-two\n").expect("written");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let table = key_table(
        &cloud(
            "[[keys]]\nsecret_id = \"AKIDone\"\nsecret_key = \"key-one\"\naccount_id = \"1001\"\n\
             [[keys]]\nsecret_id = \"AKIDtwo\"\nsecret_key_file = \"a2\"\naccount_id = \"1001\"\n",
        ),
        dir.path(),
    )
    .expect("a valid table");
    let keys = CloudKeys::new(table);
    let two = keys.get("AKIDtwo").expect("the second key");
    assert_eq!(
        (two.secret(), two.account.as_str()),
        (&b"key-two"[..], "1001")
    );
    assert_eq!(&*two.principal, "cloud key AKIDtwo");
    assert!(keys.get("AKIDthree").is_none());
    // Debug never shows a key.
    assert!(!format!("{two:?}").contains("key-two"));
    let config =
        cloud("[[keys]]\nsecret_id = \"AKIDone\"\nsecret_key = \"key-one\"\naccount_id = \"1\"\n");
    assert!(!format!("{config:?}").contains("key-one"));
}

#[test]
fn a_bad_cloud_key_is_refused_with_what_is_wrong() {
    let dir = tempfile::tempdir().expect("a directory");
    let refused = |text: &str| key_table(&cloud(text), dir.path()).expect_err("refused");
    assert_eq!(
        refused("[[keys]]\nsecret_id = \"AKIDa\"\naccount_id = \"1\"\n"),
        CloudKeyError::KeySource("AKIDa".into())
    );
    assert_eq!(
        refused("[[keys]]\nsecret_id = \"AKIDa\"\nsecret_key = \"k\"\nsecret_key_file = \"f\"\naccount_id = \"1\"\n"),
        CloudKeyError::KeySource("AKIDa".into())
    );
    assert_eq!(
        refused("[[keys]]\nsecret_id = \"AKID a\"\nsecret_key = \"k\"\naccount_id = \"1\"\n"),
        CloudKeyError::Malformed("AKID a".into())
    );
    assert_eq!(
        refused("[[keys]]\nsecret_id = \"AKIDa\"\nsecret_key = \" \"\naccount_id = \"1\"\n"),
        CloudKeyError::Malformed("AKIDa".into())
    );
    assert_eq!(
        refused("[[keys]]\nsecret_id = \"AKIDa\"\nsecret_key = \"k\"\naccount_id = \"one\"\n"),
        CloudKeyError::Account {
            id: "AKIDa".into(),
            account: "one".into()
        }
    );
    assert_eq!(
        refused(
            "[[keys]]\nsecret_id = \"AKIDa\"\nsecret_key = \"k\"\naccount_id = \"1\"\n\
             [[keys]]\nsecret_id = \"AKIDa\"\nsecret_key = \"j\"\naccount_id = \"2\"\n"
        ),
        CloudKeyError::Duplicate("AKIDa".into())
    );
    assert!(matches!(
        refused(
            "[[keys]]\nsecret_id = \"AKIDa\"\nsecret_key_file = \"missing\"\naccount_id = \"1\"\n"
        ),
        CloudKeyError::Unreadable { .. }
    ));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let file = dir.path().join("open");
        std::fs::write(&file, "k").expect("written");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(
            refused(
                "[[keys]]\nsecret_id = \"AKIDa\"\nsecret_key_file = \"open\"\naccount_id = \"1\"\n"
            ),
            CloudKeyError::Exposed {
                id: "AKIDa".into(),
                path: file,
                mode: 0o644
            }
        );
    }
    assert!(toml::from_str::<CloudApiConfig>(
        "[[keys]]\nsecret_id = \"a\"\nsecret = \"k\"\naccount_id = \"1\"\n"
    )
    .is_err());
}

#[test]
fn made_cloud_keys_look_like_tencents_and_differ() {
    let (id, key) = new_cloud_key();
    let (id2, key2) = new_cloud_key();
    assert!(id.starts_with(SECRET_ID_PREFIX) && id.len() == 36, "{id}");
    assert_eq!(key.len(), 32);
    assert!(id
        .bytes()
        .chain(key.bytes())
        .all(|b| b.is_ascii_alphanumeric()));
    assert!(id != id2 && key != key2);
}
