//! Rules in given (past events) / when (command) / then (events or error) form.

use time::macros::datetime;
use time::OffsetDateTime;

use super::*;

const NOW: OffsetDateTime = datetime!(2026-11-27 12:00:00 UTC);
const OWNER: &str = "100000000001";
const FRIEND: &str = "100000000002";
const OTHER: &str = "100000000003";
const HELPER: &str = "100000000009";
const GZ: &str = "ap-guangzhou";
const SH: &str = "ap-shanghai";

fn acct(id: &str) -> AccountId {
    AccountId::parse(id).expect("test account id")
}

fn img(id: &str) -> ImageId {
    ImageId::parse(id).expect("test image id")
}

fn region(name: &str) -> Region {
    Region::new(name)
}

fn root(id: &str) -> Event {
    Event::AccountRegistered {
        account_id: acct(id),
        kind: AccountKind::Root,
    }
}

fn collaborator(id: &str) -> Event {
    Event::AccountRegistered {
        account_id: acct(id),
        kind: AccountKind::Collaborator,
    }
}

/// Attributes of a typical Linux image called `name`.
pub(crate) fn attributes(name: &str) -> ImageAttributes {
    ImageAttributes {
        image_name: name.into(),
        image_description: "web tier".into(),
        platform: "CentOS".into(),
        os_name: "CentOS 7.9 64-bit".into(),
        image_source: ImageSource::CreateImage,
        license_type: LicenseType::Tencentcloud,
        encrypted: false,
        whole_instance: false,
        supports_cloudinit: true,
    }
}

fn registered_with(id: &str, owner: &str, at: &str, attrs: ImageAttributes) -> Event {
    Event::ImageRegistered {
        image_id: img(id),
        owner_account_id: acct(owner),
        region: region(at),
        attributes: attrs,
        state: ImageState::Normal,
        created_time: NOW,
    }
}

fn registered(id: &str, owner: &str, at: &str) -> Event {
    registered_with(id, owner, at, attributes(&format!("name-{id}")))
}

fn shared(id: &str, with: &[&str]) -> Event {
    Event::ImageShared {
        expires_at: None,
        image_id: img(id),
        account_ids: with.iter().map(|a| acct(a)).collect(),
        shared_time: NOW,
    }
}

fn state_changed(id: &str, from: ImageState, to: ImageState) -> Event {
    Event::ImageStateChanged {
        image_id: img(id),
        from,
        to,
    }
}

const IMG: &str = "img-aaaaaaaa";

/// The usual start: owner, friend and other registered as root accounts,
/// the owner's image IMG in Guangzhou.
fn base() -> Vec<Event> {
    vec![
        root(OWNER),
        root(FRIEND),
        root(OTHER),
        registered(IMG, OWNER, GZ),
    ]
}

struct Scenario {
    state: LedgerState,
    policy: Policy,
}

fn given(events: impl IntoIterator<Item = Event>) -> Scenario {
    let mut state = LedgerState::default();
    for event in events {
        state.apply(&event);
    }
    Scenario {
        state,
        policy: Policy::default(),
    }
}

impl Scenario {
    fn with_policy(mut self, change: impl FnOnce(&mut Policy)) -> Self {
        change(&mut self.policy);
        self
    }

    fn when(&self, command: Command) -> Result<Decision, DomainError> {
        self.when_at(NOW, command)
    }

    fn when_at(&self, now: OffsetDateTime, command: Command) -> Result<Decision, DomainError> {
        let mut next = 0u32;
        let mut ids = || {
            next += 1;
            ImageId::parse(&format!("img-new{next:05}")).expect("generated id")
        };
        decide(&self.state, &self.policy, &command, now, &mut ids)
    }

    fn then_events(&self, command: Command) -> Vec<Event> {
        match self.when(command) {
            Ok(decision) => decision.events,
            Err(err) => panic!("expected events, got {err:?}"),
        }
    }

    fn then_reason(&self, command: Command) -> &'static str {
        match self.when(command) {
            Ok(decision) => panic!("expected an error, got {decision:?}"),
            Err(err) => err.reason(),
        }
    }
}

fn share(caller: &str, image: &str, with: &[&str]) -> Command {
    Command::ShareImage {
        expires_at: None,
        caller: acct(caller),
        image_id: img(image),
        account_ids: with.iter().map(|a| acct(a)).collect(),
    }
}

fn cancel(caller: &str, image: &str, with: &[&str]) -> Command {
    Command::CancelImageSharing {
        caller: acct(caller),
        image_id: img(image),
        account_ids: with.iter().map(|a| acct(a)).collect(),
    }
}

fn copy(caller: &str, image: &str, to: &[&str]) -> Command {
    Command::CopyImage {
        caller: acct(caller),
        image_id: img(image),
        destination_regions: to.iter().map(|r| region(r)).collect(),
        image_name: None,
    }
}

fn delete(caller: &str, image: &str) -> Command {
    Command::DeleteImage {
        caller: acct(caller),
        image_id: img(image),
    }
}

fn rename(caller: &str, image: &str, name: &str) -> Command {
    Command::ModifyImageAttribute {
        caller: acct(caller),
        image_id: img(image),
        image_name: Some(name.into()),
        image_description: None,
    }
}

fn lighthouse(caller: &str, image: &str, permission: LighthousePermission) -> Command {
    Command::ModifyLighthouseSharePermission {
        caller: acct(caller),
        image_id: img(image),
        permission,
    }
}

fn register_image(owner: &str, at: &str, name: &str) -> Command {
    Command::RegisterImage(NewImage {
        owner_account_id: acct(owner),
        region: region(at),
        attributes: attributes(name),
        state: ImageState::Normal,
    })
}

// --- accounts ---------------------------------------------------------------

#[test]
fn registering_an_account_records_it() {
    let events = given([]).then_events(Command::RegisterAccount {
        account_id: acct(OWNER),
        kind: AccountKind::Root,
    });
    assert_eq!(events, vec![root(OWNER)]);
}

#[test]
fn registering_an_account_again_with_the_same_kind_changes_nothing() {
    let events = given([root(OWNER)]).then_events(Command::RegisterAccount {
        account_id: acct(OWNER),
        kind: AccountKind::Root,
    });
    assert!(events.is_empty());
}

#[test]
fn an_account_cannot_change_kind() {
    let reason = given([root(OWNER)]).then_reason(Command::RegisterAccount {
        account_id: acct(OWNER),
        kind: AccountKind::Collaborator,
    });
    assert_eq!(reason, "InvalidParameterValue");
}

// --- registering images -----------------------------------------------------

#[test]
fn registering_an_image_replies_with_its_id() -> Result<(), DomainError> {
    let decision = given([root(OWNER)]).when(register_image(OWNER, GZ, "web"))?;
    assert_eq!(
        decision.reply,
        Reply::ImageRegistered {
            image_id: img("img-new00001")
        }
    );
    assert_eq!(
        decision.events,
        vec![registered_with(
            "img-new00001",
            OWNER,
            GZ,
            attributes("web")
        )]
    );
    Ok(())
}

#[test]
fn an_unregistered_owner_cannot_register_images() {
    let reason = given([]).then_reason(register_image(OWNER, GZ, "web"));
    assert_eq!(reason, "InvalidAccountId.NotFound");
}

#[test]
fn images_live_in_configured_regions_only() {
    let scenario = given([root(OWNER)]);
    let reason = scenario.then_reason(register_image(OWNER, "mars-north-1", "web"));
    assert_eq!(reason, "InvalidRegion.NotFound");
    // The refusal lists the regions there are.
    let Err(err) = scenario.when(register_image(OWNER, "mars-north-1", "web")) else {
        panic!("a region not configured was taken");
    };
    let said = err.to_string();
    assert!(
        said.starts_with("the region \"mars-north-1\" is not one of the supported regions: ap-")
            && said.contains(", ap-guangzhou, "),
        "{said}"
    );
}

#[test]
fn names_are_unique_per_owner_and_region() {
    let scenario = given(base());
    let name = format!("name-{IMG}");
    assert_eq!(
        scenario.then_reason(register_image(OWNER, GZ, &name)),
        "InvalidImageName.Duplicate"
    );
    // Another region or another owner may use the name.
    assert_eq!(
        scenario.then_events(register_image(OWNER, SH, &name)).len(),
        1
    );
    assert_eq!(
        scenario
            .then_events(register_image(FRIEND, GZ, &name))
            .len(),
        1
    );
}

#[test]
fn long_names_and_descriptions_are_refused() {
    let scenario = given([root(OWNER)]);
    let long_name = "n".repeat(MAX_NAME_CHARS + 1);
    assert_eq!(
        scenario.then_reason(register_image(OWNER, GZ, &long_name)),
        "InvalidParameterValue.TooLarge"
    );
    assert_eq!(
        scenario.then_reason(register_image(OWNER, GZ, "")),
        "InvalidParameterValue"
    );
    let mut attrs = attributes("web");
    attrs.image_description = "d".repeat(MAX_DESCRIPTION_CHARS + 1).into();
    let command = Command::RegisterImage(NewImage {
        owner_account_id: acct(OWNER),
        region: region(GZ),
        attributes: attrs,
        state: ImageState::Normal,
    });
    assert_eq!(
        scenario.then_reason(command),
        "InvalidParameterValue.TooLarge"
    );
    // Exactly at the limits is fine; length counts characters, not bytes.
    let at_limit = "名".repeat(MAX_NAME_CHARS);
    assert_eq!(
        scenario
            .then_events(register_image(OWNER, GZ, &at_limit))
            .len(),
        1
    );
}

#[test]
fn registering_past_the_quota_is_refused() {
    let scenario = given(base()).with_policy(|p| p.image_quota = 1);
    assert_eq!(
        scenario.then_reason(register_image(OWNER, GZ, "second")),
        "ImageQuotaLimitExceeded"
    );
    // The quota is per region.
    assert_eq!(
        scenario
            .then_events(register_image(OWNER, SH, "second"))
            .len(),
        1
    );
}

#[test]
fn deleting_an_image_frees_its_quota() {
    let scenario = given(
        base()
            .into_iter()
            .chain([Event::ImageDeleted { image_id: img(IMG) }]),
    )
    .with_policy(|p| p.image_quota = 1);
    assert_eq!(scenario.state.images_used(&acct(OWNER), &region(GZ)), 0);
    assert_eq!(
        scenario
            .then_events(register_image(OWNER, GZ, "again"))
            .len(),
        1
    );
}

#[test]
fn shared_images_count_against_nobodys_quota() {
    let scenario = given(base().into_iter().chain([shared(IMG, &[FRIEND])]));
    assert_eq!(scenario.state.images_used(&acct(OWNER), &region(GZ)), 1);
    assert_eq!(scenario.state.images_used(&acct(FRIEND), &region(GZ)), 0);
}

// --- sharing ----------------------------------------------------------------

#[test]
fn owner_shares_with_root_accounts() {
    let events = given(base()).then_events(share(OWNER, IMG, &[FRIEND, OTHER]));
    assert_eq!(events, vec![shared(IMG, &[FRIEND, OTHER])]);
}

#[test]
fn only_the_owner_can_share() {
    let scenario = given(base().into_iter().chain([shared(IMG, &[FRIEND])]));
    assert_eq!(
        scenario.then_reason(share(OTHER, IMG, &[FRIEND])),
        "UnauthorizedOperation.ImageNotBelongToAccount"
    );
    // A recipient cannot re-share.
    assert_eq!(
        scenario.then_reason(share(FRIEND, IMG, &[OTHER])),
        "UnauthorizedOperation.ImageNotBelongToAccount"
    );
}

#[test]
fn sharing_an_unknown_or_deleted_image_is_not_found() {
    let scenario = given(
        base()
            .into_iter()
            .chain([Event::ImageDeleted { image_id: img(IMG) }]),
    );
    assert_eq!(
        scenario.then_reason(share(OWNER, IMG, &[FRIEND])),
        "InvalidImageId.NotFound"
    );
    assert_eq!(
        scenario.then_reason(share(OWNER, "img-zzzzzzzz", &[FRIEND])),
        "InvalidImageId.NotFound"
    );
}

#[test]
fn an_image_cannot_be_shared_with_its_owner() {
    let reason = given(base()).then_reason(share(OWNER, IMG, &[FRIEND, OWNER]));
    assert_eq!(reason, "InvalidAccountIs.YourSelf");
}

#[test]
fn images_are_shared_with_registered_accounts_only() {
    let reason = given(base()).then_reason(share(OWNER, IMG, &[FRIEND, "555"]));
    assert_eq!(reason, "InvalidAccountId.NotFound");
}

#[test]
fn images_are_not_shared_with_collaborators() {
    let reason = given(base().into_iter().chain([collaborator(HELPER)])).then_reason(share(
        OWNER,
        IMG,
        &[HELPER],
    ));
    assert_eq!(reason, "FailedOperation.NotMasterAccount");
}

#[test]
fn sharing_twice_with_one_account_is_refused() {
    let reason = given(base().into_iter().chain([shared(IMG, &[FRIEND])])).then_reason(share(
        OWNER,
        IMG,
        &[OTHER, FRIEND],
    ));
    assert_eq!(reason, "FailedOperation.AccountAlreadyExists");
}

#[test]
fn account_lists_must_be_non_empty_distinct_and_within_the_call_cap() {
    let scenario = given(base()).with_policy(|p| p.max_accounts_per_call = 2);
    assert_eq!(
        scenario.then_reason(share(OWNER, IMG, &[])),
        "InvalidParameterValue"
    );
    assert_eq!(
        scenario.then_reason(share(OWNER, IMG, &[FRIEND, FRIEND])),
        "InvalidParameterValue"
    );
    assert_eq!(
        scenario.then_reason(share(OWNER, IMG, &[FRIEND, OTHER, HELPER])),
        "InvalidParameterValue.LimitExceeded"
    );
    assert_eq!(
        scenario.then_reason(cancel(OWNER, IMG, &[])),
        "InvalidParameterValue"
    );
}

#[test]
fn an_image_is_shared_with_at_most_the_limit() {
    let mut events = base();
    let recipients: Vec<String> = (0..50).map(|i| format!("2000000{i:05}")).collect();
    for r in &recipients {
        events.push(root(r));
    }
    let first: Vec<&str> = recipients[..49].iter().map(String::as_str).collect();
    events.push(shared(IMG, &first));
    let scenario = given(events);
    // One slot left: two more overflow, one fits.
    assert_eq!(
        scenario.then_reason(share(OWNER, IMG, &[&recipients[49], FRIEND])),
        "OverQuota"
    );
    assert_eq!(
        scenario
            .then_events(share(OWNER, IMG, &[&recipients[49]]))
            .len(),
        1
    );
    // The limit is a setting.
    let small = given(base()).with_policy(|p| p.max_shares_per_image = 1);
    assert_eq!(
        small.then_reason(share(OWNER, IMG, &[FRIEND, OTHER])),
        "OverQuota"
    );
}

#[test]
fn only_normal_images_are_shared() {
    let scenario = given(base().into_iter().chain([state_changed(
        IMG,
        ImageState::Normal,
        ImageState::Syncing,
    )]));
    assert_eq!(
        scenario.then_reason(share(OWNER, IMG, &[FRIEND])),
        "InvalidParameterValue.InvalidImageState"
    );
}

#[test]
fn byol_encrypted_and_whole_instance_images_are_not_shared() {
    let with = |change: fn(&mut ImageAttributes)| {
        let mut attrs = attributes("special");
        change(&mut attrs);
        given([
            root(OWNER),
            root(FRIEND),
            registered_with(IMG, OWNER, GZ, attrs),
        ])
        .then_reason(share(OWNER, IMG, &[FRIEND]))
    };
    assert_eq!(
        with(|a| a.license_type = LicenseType::Byol),
        "FailedOperation.BYOLImageShareFailed"
    );
    assert_eq!(
        with(|a| a.encrypted = true),
        "UnsupportedOperation.EncryptedImagesNotSupported"
    );
    assert_eq!(
        with(|a| a.whole_instance = true),
        "InvalidParameter.InstanceImageNotSupport"
    );
}

#[test]
fn owner_cancels_shares() {
    let scenario = given(base().into_iter().chain([shared(IMG, &[FRIEND, OTHER])]));
    assert_eq!(
        scenario.then_events(cancel(OWNER, IMG, &[FRIEND])),
        vec![Event::ShareCancelled {
            image_id: img(IMG),
            account_ids: vec![acct(FRIEND)],
        }]
    );
}

#[test]
fn cancelling_an_account_not_shared_is_refused_and_changes_nothing() {
    let scenario = given(base().into_iter().chain([shared(IMG, &[FRIEND])]));
    assert_eq!(
        scenario.then_reason(cancel(OWNER, IMG, &[FRIEND, OTHER])),
        "FailedOperation.AccountNotShared"
    );
    assert_eq!(
        scenario.then_reason(cancel(FRIEND, IMG, &[FRIEND])),
        "UnauthorizedOperation.ImageNotBelongToAccount"
    );
}

#[test]
fn a_cancelled_share_can_be_made_again() {
    let scenario = given(base().into_iter().chain([
        shared(IMG, &[FRIEND]),
        Event::ShareCancelled {
            image_id: img(IMG),
            account_ids: vec![acct(FRIEND)],
        },
    ]));
    assert_eq!(scenario.then_events(share(OWNER, IMG, &[FRIEND])).len(), 1);
}

// --- deleting -----------------------------------------------------------------

#[test]
fn owner_cannot_delete_while_shared() {
    let scenario = given(base().into_iter().chain([shared(IMG, &[FRIEND])]));
    assert_eq!(
        scenario.then_reason(delete(OWNER, IMG)),
        "InvalidImageId.InShared"
    );
    let lighthouse_only = given(
        base()
            .into_iter()
            .chain([Event::LighthouseShared { image_id: img(IMG) }]),
    );
    assert_eq!(
        lighthouse_only.then_reason(delete(OWNER, IMG)),
        "InvalidImageId.InShared"
    );
}

#[test]
fn owner_deletes_an_unshared_image() {
    let events = given(base()).then_events(delete(OWNER, IMG));
    assert_eq!(events, vec![Event::ImageDeleted { image_id: img(IMG) }]);
}

#[test]
fn images_being_produced_cannot_be_deleted() {
    for transient in [
        ImageState::Creating,
        ImageState::Syncing,
        ImageState::Importing,
    ] {
        let scenario = given(base().into_iter().chain([state_changed(
            IMG,
            ImageState::Normal,
            transient,
        )]));
        assert_eq!(
            scenario.then_reason(delete(OWNER, IMG)),
            "InvalidImageId.IncorrectState"
        );
    }
    let failed = given(base().into_iter().chain([state_changed(
        IMG,
        ImageState::Normal,
        ImageState::Createfailed,
    )]));
    assert_eq!(failed.then_events(delete(OWNER, IMG)).len(), 1);
}

#[test]
fn recipients_cannot_delete_shared_images() {
    let scenario = given(base().into_iter().chain([shared(IMG, &[FRIEND])]));
    assert_eq!(
        scenario.then_reason(delete(FRIEND, IMG)),
        "InvalidParameterValue.InvalidImageIdIsShared"
    );
    assert_eq!(
        scenario.then_reason(delete(OTHER, IMG)),
        "UnauthorizedOperation.ImageNotBelongToAccount"
    );
}

// --- modifying --------------------------------------------------------------

#[test]
fn owner_renames_and_recipients_cannot() {
    let scenario = given(base().into_iter().chain([shared(IMG, &[FRIEND])]));
    assert_eq!(
        scenario.then_events(rename(OWNER, IMG, "renamed")),
        vec![Event::ImageAttributesModified {
            image_id: img(IMG),
            image_name: Some("renamed".into()),
            image_description: None,
        }]
    );
    assert_eq!(
        scenario.then_reason(rename(FRIEND, IMG, "mine")),
        "UnsupportedOperation.SharedImageModifyUnsupported"
    );
    assert_eq!(
        scenario.then_reason(Command::ModifyImageAttribute {
            caller: acct(FRIEND),
            image_id: img(IMG),
            image_name: None,
            image_description: Some("mine".into()),
        }),
        "UnsupportedOperation.SharedImageModifyUnsupported"
    );
}

#[test]
fn renaming_to_a_name_in_use_is_refused_but_keeping_ones_own_name_is_not() {
    let scenario = given(
        base()
            .into_iter()
            .chain([registered("img-bbbbbbbb", OWNER, GZ)]),
    );
    assert_eq!(
        scenario.then_reason(rename(OWNER, IMG, "name-img-bbbbbbbb")),
        "InvalidImageName.Duplicate"
    );
    assert!(scenario
        .then_events(rename(OWNER, IMG, &format!("name-{IMG}")))
        .is_empty());
}

#[test]
fn modify_needs_a_field_within_limits() {
    let scenario = given(base());
    assert_eq!(
        scenario.then_reason(Command::ModifyImageAttribute {
            caller: acct(OWNER),
            image_id: img(IMG),
            image_name: None,
            image_description: None,
        }),
        "InvalidParameterValue"
    );
    assert_eq!(
        scenario.then_reason(rename(OWNER, IMG, &"x".repeat(61))),
        "InvalidParameterValue.TooLarge"
    );
}

// --- copying ----------------------------------------------------------------

#[test]
fn owner_copies_to_other_regions_as_new_syncing_images() -> Result<(), DomainError> {
    let decision = given(base().into_iter().chain([shared(IMG, &[FRIEND])])).when(copy(
        OWNER,
        IMG,
        &[SH, "ap-beijing"],
    ))?;
    assert_eq!(decision.events.len(), 2);
    match &decision.events[0] {
        Event::ImageCopied {
            image_id,
            owner_account_id,
            region: at,
            copied_from,
            state,
            attributes: attrs,
            ..
        } => {
            assert_eq!(image_id, &img("img-new00001"));
            assert_eq!(owner_account_id, &acct(OWNER));
            assert_eq!(at, &region(SH));
            assert_eq!(copied_from.image_id, img(IMG));
            assert_eq!(copied_from.region, region(GZ));
            assert_eq!(*state, ImageState::Syncing);
            assert_eq!(attrs.image_name, format!("name-{IMG}"));
        }
        other => panic!("expected ImageCopied, got {other:?}"),
    }
    // Copies do not inherit shares.
    let mut state = given(base()).state;
    for event in &decision.events {
        state.apply(event);
    }
    let copy = state
        .live_image(&img("img-new00001"))
        .expect("the copy exists");
    assert!(copy.shares.is_empty());
    Ok(())
}

#[test]
fn owner_cannot_copy_into_the_images_own_region() {
    let reason = given(base()).then_reason(copy(OWNER, IMG, &[SH, GZ]));
    assert_eq!(reason, "InvalidParameterValue.InvalidRegion");
}

#[test]
fn recipients_copy_into_their_account_within_the_region_only() -> Result<(), DomainError> {
    let scenario = given(base().into_iter().chain([shared(IMG, &[FRIEND])]));
    assert_eq!(
        scenario.then_reason(copy(FRIEND, IMG, &[SH])),
        "InvalidParameterValue.InvalidRegion"
    );
    let decision = scenario.when(copy(FRIEND, IMG, &[GZ]))?;
    match &decision.events[..] {
        [Event::ImageCopied {
            owner_account_id, ..
        }] => assert_eq!(owner_account_id, &acct(FRIEND)),
        other => panic!("expected one ImageCopied, got {other:?}"),
    }
    assert_eq!(
        scenario.then_reason(copy(OTHER, IMG, &[GZ])),
        "UnauthorizedOperation.ImageNotBelongToAccount"
    );
    Ok(())
}

#[test]
fn copies_obey_state_encryption_names_and_quota() {
    let syncing = given(base().into_iter().chain([state_changed(
        IMG,
        ImageState::Normal,
        ImageState::Syncing,
    )]));
    assert_eq!(
        syncing.then_reason(copy(OWNER, IMG, &[SH])),
        "InvalidParameterValue.InvalidImageState"
    );
    let mut attrs = attributes("secret");
    attrs.encrypted = true;
    let encrypted = given([root(OWNER), registered_with(IMG, OWNER, GZ, attrs)]);
    assert_eq!(
        encrypted.then_reason(copy(OWNER, IMG, &[SH])),
        "UnsupportedOperation.EncryptedImagesNotSupported"
    );
    let taken = given(base().into_iter().chain([registered_with(
        "img-bbbbbbbb",
        OWNER,
        SH,
        attributes(&format!("name-{IMG}")),
    )]));
    assert_eq!(
        taken.then_reason(copy(OWNER, IMG, &[SH])),
        "InvalidImageName.Duplicate"
    );
    let full = given(
        base()
            .into_iter()
            .chain([registered("img-bbbbbbbb", OWNER, SH)]),
    )
    .with_policy(|p| p.image_quota = 1);
    assert_eq!(
        full.then_reason(copy(OWNER, IMG, &[SH])),
        "ImageQuotaLimitExceeded"
    );
    let scenario = given(base());
    assert_eq!(
        scenario.then_reason(copy(OWNER, IMG, &[])),
        "InvalidParameterValue"
    );
    assert_eq!(
        scenario.then_reason(copy(OWNER, IMG, &[SH, SH])),
        "InvalidParameterValue"
    );
    assert_eq!(
        scenario.then_reason(copy(OWNER, IMG, &["moon-1"])),
        "InvalidRegion.NotFound"
    );
}

// --- Lighthouse -------------------------------------------------------------

#[test]
fn owner_shares_with_lighthouse_once_and_cancels() {
    let scenario = given(base());
    assert_eq!(
        scenario.then_events(lighthouse(OWNER, IMG, LighthousePermission::Share)),
        vec![Event::LighthouseShared { image_id: img(IMG) }]
    );
    assert_eq!(
        scenario.then_reason(lighthouse(OWNER, IMG, LighthousePermission::Cancel)),
        "FailedOperation.AccountNotShared"
    );
    let shared_once = given(
        base()
            .into_iter()
            .chain([Event::LighthouseShared { image_id: img(IMG) }]),
    );
    assert_eq!(
        shared_once.then_reason(lighthouse(OWNER, IMG, LighthousePermission::Share)),
        "UnsupportedOperation.ImageAlreadyShared"
    );
    assert_eq!(
        shared_once.then_events(lighthouse(OWNER, IMG, LighthousePermission::Cancel)),
        vec![Event::LighthouseShareCancelled { image_id: img(IMG) }]
    );
    assert_eq!(
        scenario.then_reason(lighthouse(FRIEND, IMG, LighthousePermission::Share)),
        "UnauthorizedOperation.ImageNotBelongToAccount"
    );
}

#[test]
fn lighthouse_refuses_imported_whole_instance_and_no_cloudinit_images() {
    let with = |change: fn(&mut ImageAttributes)| {
        let mut attrs = attributes("special");
        change(&mut attrs);
        given([root(OWNER), registered_with(IMG, OWNER, GZ, attrs)]).then_reason(lighthouse(
            OWNER,
            IMG,
            LighthousePermission::Share,
        ))
    };
    for reason in [
        with(|a| a.image_source = ImageSource::ExternalImport),
        with(|a| a.whole_instance = true),
        with(|a| a.supports_cloudinit = false),
    ] {
        assert_eq!(reason, "UnsupportedOperation.ImageUnableToShare");
    }
    let syncing = given(base().into_iter().chain([state_changed(
        IMG,
        ImageState::Normal,
        ImageState::Syncing,
    )]));
    assert_eq!(
        syncing.then_reason(lighthouse(OWNER, IMG, LighthousePermission::Share)),
        "InvalidParameterValue.InvalidImageState"
    );
}

// --- state and authorization -------------------------------------------------

#[test]
fn a_state_report_records_the_change_once() {
    let scenario = given(base());
    let to_syncing = Command::UpdateImageState {
        image_id: img(IMG),
        state: ImageState::Syncing,
    };
    assert_eq!(
        scenario.then_events(to_syncing),
        vec![state_changed(IMG, ImageState::Normal, ImageState::Syncing)]
    );
    let same = Command::UpdateImageState {
        image_id: img(IMG),
        state: ImageState::Normal,
    };
    assert!(scenario.then_events(same).is_empty());
}

fn may_use(scenario: &Scenario, who: &str, at: &str, usage: ImageUse) -> Result<(), &'static str> {
    authorize(
        &scenario.state,
        &scenario.policy,
        &acct(who),
        &img(IMG),
        &region(at),
        usage,
        NOW,
    )
    .map(drop)
    .map_err(|e| e.reason())
}

#[test]
fn owner_and_recipients_use_the_image_in_its_region_only() {
    let scenario = given(base().into_iter().chain([shared(IMG, &[FRIEND])]));
    assert_eq!(
        may_use(&scenario, OWNER, GZ, ImageUse::CreateInstance),
        Ok(())
    );
    assert_eq!(may_use(&scenario, OWNER, GZ, ImageUse::Export), Ok(()));
    assert_eq!(
        may_use(&scenario, FRIEND, GZ, ImageUse::ReinstallInstance),
        Ok(())
    );
    assert_eq!(
        may_use(&scenario, FRIEND, GZ, ImageUse::Export),
        Err("UnsupportedOperation.SharedImageExportUnsupported")
    );
    assert_eq!(
        may_use(&scenario, FRIEND, SH, ImageUse::CreateInstance),
        Err("InvalidParameterValue.InvalidRegion")
    );
    assert_eq!(
        may_use(&scenario, OTHER, GZ, ImageUse::CreateInstance),
        Err("UnauthorizedOperation.ImageNotBelongToAccount")
    );
}

#[test]
fn cancelled_or_deleted_means_no_more_use() {
    let cancelled = given(base().into_iter().chain([
        shared(IMG, &[FRIEND]),
        Event::ShareCancelled {
            image_id: img(IMG),
            account_ids: vec![acct(FRIEND)],
        },
    ]));
    assert_eq!(
        may_use(&cancelled, FRIEND, GZ, ImageUse::CreateInstance),
        Err("UnauthorizedOperation.ImageNotBelongToAccount")
    );
    let deleted = given(
        base()
            .into_iter()
            .chain([Event::ImageDeleted { image_id: img(IMG) }]),
    );
    assert_eq!(
        may_use(&deleted, OWNER, GZ, ImageUse::CreateInstance),
        Err("InvalidImageId.NotFound")
    );
}

// --- the state's indexes ------------------------------------------------------

#[test]
fn restoring_saved_aggregates_gives_the_replayed_state() {
    let mut events = base();
    events.extend([
        registered("img-bbbbbbbb", OWNER, SH),
        shared(IMG, &[FRIEND, OTHER]),
        Event::ShareCancelled {
            image_id: img(IMG),
            account_ids: vec![acct(OTHER)],
        },
        Event::ImageDeleted {
            image_id: img("img-bbbbbbbb"),
        },
    ]);
    let replayed = given(events).state;
    let restored = LedgerState::restore(
        replayed.accounts().map(|(id, a)| (id.clone(), a.clone())),
        replayed.images().cloned(),
    );
    assert_eq!(restored, replayed);
    let visible: Vec<_> = restored
        .shared_in_region(&acct(FRIEND), &region(GZ))
        .map(|i| i.image_id.clone())
        .collect();
    assert_eq!(visible, vec![img(IMG)]);
    assert_eq!(
        restored.shared_in_region(&acct(OTHER), &region(GZ)).count(),
        0
    );
}

// --- ids --------------------------------------------------------------------

#[test]
fn ids_are_checked_for_form() {
    assert_eq!(
        ImageId::parse("img-ABCDEFGH").map_err(|e| e.reason()),
        Err("InvalidImageId.Malformed")
    );
    assert_eq!(
        ImageId::parse("img-abc").map_err(|e| e.reason()),
        Err("InvalidImageId.Malformed")
    );
    assert!(ImageId::parse("img-a1b2c3d4").is_ok());
    for bad in ["", "12a", "１２３", &"1".repeat(21)] {
        assert_eq!(
            AccountId::parse(bad).map_err(|e| e.reason()),
            Err("InvalidAccountId.Malformed"),
            "{bad:?}"
        );
    }
    assert_eq!(ClientToken::parse_optional("").ok(), Some(None));
    assert!(ClientToken::parse_optional(&"t".repeat(65)).is_err());
    assert!(ClientToken::parse_optional("tök").is_err());
}

#[test]
fn an_image_id_is_a_number_that_keeps_its_text_and_order() {
    let texts = [
        "img-00000000",
        "img-00000009",
        "img-0000000a",
        "img-0000000z",
        "img-00000010",
        "img-a1b2c3d4",
        "img-zzzzzzzz",
    ];
    let ids: Vec<ImageId> = texts.iter().map(|t| img(t)).collect();
    for (id, text) in ids.iter().zip(texts) {
        assert_eq!(id.text(), text);
        assert_eq!(id.to_string(), text);
        assert_eq!(format!("{id:?}"), format!("ImageId({text:?})"));
        assert_eq!(serde_json::to_string(id).ok(), Some(format!("{text:?}")));
        assert_eq!(
            serde_json::from_str::<ImageId>(&format!("{text:?}"))
                .ok()
                .as_ref(),
            Some(id)
        );
        let packed = postcard::to_allocvec(id).unwrap_or_default();
        assert_eq!(
            postcard::from_bytes::<ImageId>(&packed).ok().as_ref(),
            Some(id)
        );
    }
    // Ids order as their texts do (ASCII: digits before letters).
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    assert_eq!(ImageId::from_number(0), ids[0]);
    assert_eq!(ImageId::from_number(ImageId::COUNT - 1), ids[6]);
    assert_eq!(ImageId::from_number(ImageId::COUNT), ids[0]);
    for bad in [
        "\"img-0000000\"",
        "\"img-0000000A\"",
        "\"img-000000000\"",
        "\"\"",
        "7",
    ] {
        let refused = serde_json::from_str::<ImageId>(bad)
            .err()
            .map(|e| e.to_string());
        assert!(
            refused.as_deref().is_some_and(
                |e| e.contains("not of the form img-") || e.contains("expected an image id")
            ),
            "{bad}: {refused:?}"
        );
    }
}

/// The writer changes its state while readers hold a clone of it (the
/// published snapshot): nothing it changes may show through the clone,
/// whether the change copies a map node, an image or its attributes.
#[test]
fn a_clone_of_the_state_does_not_see_later_changes() {
    let mut state = LedgerState::default();
    for event in base().into_iter().chain([shared(IMG, &[FRIEND])]) {
        state.apply(&event);
    }
    let snapshot = state.clone();
    for event in [
        Event::ImageAttributesModified {
            image_id: img(IMG),
            image_name: Some("renamed".into()),
            image_description: Some("changed".into()),
        },
        shared(IMG, &[OTHER]),
        Event::ShareCancelled {
            image_id: img(IMG),
            account_ids: vec![acct(FRIEND)],
        },
        registered("img-00000002", OWNER, GZ),
    ] {
        state.apply(&event);
    }

    let before = snapshot.any_image(&img(IMG)).expect("image");
    assert_eq!(before.attributes.image_name, format!("name-{IMG}"));
    assert_eq!(before.attributes.image_description, "web tier");
    assert_eq!(
        before.shares.keys().collect::<Vec<_>>(),
        vec![&acct(FRIEND)]
    );
    assert_eq!(before.version, 2);
    assert_eq!(snapshot.shared_count(&acct(FRIEND), &region(GZ)), 1);
    assert_eq!(snapshot.shared_count(&acct(OTHER), &region(GZ)), 0);
    assert_eq!(snapshot.images_used(&acct(OWNER), &region(GZ)), 1);
    assert!(snapshot.any_image(&img("img-00000002")).is_none());

    let after = state.any_image(&img(IMG)).expect("image");
    assert_eq!(after.attributes.image_name, "renamed");
    assert_eq!(after.attributes.image_description, "changed");
    assert_eq!(after.shares.keys().collect::<Vec<_>>(), vec![&acct(OTHER)]);
    assert_eq!(after.version, 5);
    assert_eq!(state.shared_count(&acct(FRIEND), &region(GZ)), 0);
    assert_eq!(state.shared_count(&acct(OTHER), &region(GZ)), 1);
    assert_eq!(state.images_used(&acct(OWNER), &region(GZ)), 2);
}

#[test]
fn names_are_compared_after_nfc_and_invisible_ones_are_refused() {
    use super::{normalized_name, same_name, validate_image_name};
    assert!(same_name("caf\u{e9}", "cafe\u{301}"));
    assert!(!same_name("cafe", "caf\u{e9}"));
    assert_eq!(normalized_name("cafe\u{301}".into()), "caf\u{e9}");
    for invisible in ["\u{200b}", "\t", "\u{a0}\u{feff}", "\u{e0041}"] {
        assert!(
            matches!(
                validate_image_name(invisible),
                Err(DomainError::InvalidParameter(_))
            ),
            "{invisible:?}"
        );
    }
    assert!(validate_image_name("\u{200b}a").is_ok());
}

fn together(commands: Vec<Command>) -> Command {
    Command::Together { commands }
}

#[test]
fn commands_together_are_decided_in_order_and_all_or_none() {
    const OTHER_IMG: &str = "img-bbbbbbbb";
    let two = || base().into_iter().chain([registered(OTHER_IMG, OWNER, GZ)]);
    // Deleting both when the second is shared deletes neither.
    let one_shared = given(two().chain([shared(OTHER_IMG, &[FRIEND])]));
    assert_eq!(
        one_shared.then_reason(together(vec![delete(OWNER, IMG), delete(OWNER, OTHER_IMG)])),
        "InvalidImageId.InShared"
    );
    // Each is decided against what the ones before it did.
    let scenario = given(two());
    assert_eq!(
        scenario.then_reason(together(vec![delete(OWNER, IMG), delete(OWNER, IMG)])),
        "InvalidImageId.NotFound"
    );
    let deleted =
        scenario.then_events(together(vec![delete(OWNER, IMG), delete(OWNER, OTHER_IMG)]));
    assert_eq!(
        deleted,
        [
            Event::ImageDeleted { image_id: img(IMG) },
            Event::ImageDeleted {
                image_id: img(OTHER_IMG)
            }
        ]
    );
    // Copies share the destination's quota: one fits, the second does not.
    let tight = given(two()).with_policy(|p| p.image_quota = 1);
    assert!(tight.when(copy(OWNER, IMG, &[SH])).is_ok());
    assert_eq!(
        tight.then_reason(together(vec![
            copy(OWNER, IMG, &[SH]),
            copy(OWNER, OTHER_IMG, &[SH])
        ])),
        "ImageQuotaLimitExceeded"
    );
    let copied = scenario
        .when(together(vec![
            copy(OWNER, IMG, &[SH]),
            copy(OWNER, OTHER_IMG, &[SH]),
        ]))
        .expect("both copied");
    match &copied.reply {
        Reply::ImagesCopied { images } => {
            assert_eq!(images.len(), 2);
            assert_ne!(images[0].image_id, images[1].image_id);
            assert!(images.iter().all(|copy| copy.region == region(SH)));
        }
        other => panic!("expected the copies, got {other:?}"),
    }
    assert_eq!(copied.events.len(), 2);
    // One caller, at least one command, no nesting.
    for refused in [
        together(vec![]),
        together(vec![delete(OWNER, IMG), delete(FRIEND, OTHER_IMG)]),
        together(vec![together(vec![delete(OWNER, IMG)])]),
    ] {
        assert_eq!(scenario.then_reason(refused), "InvalidParameterValue");
    }
}

mod controls;
