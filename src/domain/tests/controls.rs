//! The controls beyond Tencent's, given/when/then, with their interplay
//! with each other and with the sharing rules.

use super::*;

fn leave(caller: &str, image: &str) -> Command {
    Command::LeaveImageShare {
        caller: acct(caller),
        image_id: img(image),
    }
}

fn disable(caller: &str, disabled: bool) -> Command {
    Command::SetImageDisabled {
        caller: acct(caller),
        image_id: img(IMG),
        disabled,
    }
}

fn protect(caller: &str, enabled: bool, with_cooldown: bool) -> Command {
    Command::ModifyDeletionProtection {
        caller: acct(caller),
        image_id: img(IMG),
        enabled,
        with_cooldown,
    }
}

fn deprecate(caller: &str, deprecated: bool) -> Command {
    Command::SetImageDeprecated {
        caller: acct(caller),
        image_id: img(IMG),
        deprecated,
    }
}

fn trust(caller: &str, mode: TrustMode, owners: &[&str]) -> Command {
    Command::SetTrustedImageOwners {
        caller: acct(caller),
        mode,
        owner_account_ids: owners.iter().map(|a| acct(a)).collect(),
    }
}

fn trusted_set(caller: &str, mode: TrustMode, owners: &[&str]) -> Event {
    Event::TrustedImageOwnersSet {
        account_id: acct(caller),
        mode,
        owner_account_ids: owners.iter().map(|a| acct(a)).collect(),
    }
}

/// `given` plus the decision of each command applied, as the writer does.
fn after(events: Vec<Event>, commands: Vec<Command>) -> Scenario {
    let mut scenario = given(events);
    for command in commands {
        for event in scenario.then_events(command) {
            scenario.state.apply(&event);
        }
    }
    scenario
}

// --- leaving a share ----------------------------------------------------------

#[test]
fn a_recipient_leaves_and_loses_use_and_the_listing() {
    let scenario = given(base().into_iter().chain([shared(IMG, &[FRIEND, OTHER])]));
    assert_eq!(
        scenario.then_events(leave(FRIEND, IMG)),
        vec![Event::ShareLeft {
            image_id: img(IMG),
            account_id: acct(FRIEND),
        }]
    );
    let left = after(
        base(),
        vec![share(OWNER, IMG, &[FRIEND]), leave(FRIEND, IMG)],
    );
    assert_eq!(
        may_use(&left, FRIEND, GZ, ImageUse::CreateInstance),
        Err("UnauthorizedOperation.ImageNotBelongToAccount")
    );
    assert_eq!(left.state.shared_count(&acct(FRIEND), &region(GZ)), 0);
    assert!(left
        .state
        .live_image(&img(IMG))
        .is_some_and(|i| i.shares.is_empty()));
    // Leaving twice, or an image never shared, is refused.
    assert_eq!(
        left.then_reason(leave(FRIEND, IMG)),
        "FailedOperation.AccountNotShared"
    );
}

#[test]
fn the_owner_cannot_leave_its_own_image() {
    let scenario = given(base());
    assert_eq!(
        scenario.then_reason(leave(OWNER, IMG)),
        "InvalidAccountIs.YourSelf"
    );
    assert_eq!(
        scenario.then_reason(leave("100000000077", IMG)),
        "InvalidAccountId.NotFound"
    );
}

#[test]
fn leaving_frees_the_owners_slot() {
    let full = after(base(), vec![share(OWNER, IMG, &[FRIEND])])
        .with_policy(|p| p.max_shares_per_image = 1);
    assert_eq!(full.then_reason(share(OWNER, IMG, &[OTHER])), "OverQuota");
    let mut left = after(
        base(),
        vec![share(OWNER, IMG, &[FRIEND]), leave(FRIEND, IMG)],
    )
    .with_policy(|p| p.max_shares_per_image = 1);
    assert_eq!(left.then_events(share(OWNER, IMG, &[OTHER])).len(), 1);
    // And once everyone left, the owner may delete.
    left.state
        .apply(&Event::ImageDeleted { image_id: img(IMG) });
    assert!(left.state.live_image(&img(IMG)).is_none());
}

// --- disable and enable ---------------------------------------------------------

#[test]
fn disabling_cancels_every_share_in_the_same_decision() {
    let scenario = given(base().into_iter().chain([
        shared(IMG, &[OTHER, FRIEND]),
        Event::LighthouseShared { image_id: img(IMG) },
    ]));
    assert_eq!(
        scenario.then_events(disable(OWNER, true)),
        vec![Event::ImageDisabled {
            image_id: img(IMG),
            cancelled_account_ids: vec![acct(FRIEND), acct(OTHER)],
            lighthouse_cancelled: true,
        }]
    );
    let disabled = after(
        base(),
        vec![share(OWNER, IMG, &[FRIEND]), disable(OWNER, true)],
    );
    let image = disabled.state.live_image(&img(IMG)).expect("live");
    assert!(image.disabled && image.shares.is_empty() && !image.lighthouse_shared);
    assert_eq!(disabled.state.shared_count(&acct(FRIEND), &region(GZ)), 0);
}

#[test]
fn a_disabled_image_is_used_shared_copied_and_changed_by_nobody() {
    let disabled = after(base(), vec![disable(OWNER, true)]);
    assert_eq!(
        may_use(&disabled, OWNER, GZ, ImageUse::CreateInstance),
        Err("UnsupportedOperation.ImageDisabled")
    );
    for command in [
        share(OWNER, IMG, &[FRIEND]),
        copy(OWNER, IMG, &[SH]),
        rename(OWNER, IMG, "other"),
        lighthouse(OWNER, IMG, LighthousePermission::Share),
        deprecate(OWNER, true),
    ] {
        assert_eq!(
            disabled.then_reason(command.clone()),
            "UnsupportedOperation.ImageDisabled",
            "{command:?}"
        );
    }
    // Disabling again changes nothing; only the owner may do either.
    assert!(disabled.then_events(disable(OWNER, true)).is_empty());
    assert_eq!(
        disabled.then_reason(disable(FRIEND, false)),
        "UnauthorizedOperation.ImageNotBelongToAccount"
    );
    // It can still be protected, and deleted.
    assert_eq!(disabled.then_events(protect(OWNER, true, false)).len(), 1);
    assert_eq!(
        disabled.then_events(delete(OWNER, IMG)),
        vec![Event::ImageDeleted { image_id: img(IMG) }]
    );
}

#[test]
fn enabling_restores_the_owner_not_the_shares() {
    let enabled = after(
        base(),
        vec![
            share(OWNER, IMG, &[FRIEND]),
            disable(OWNER, true),
            disable(OWNER, false),
        ],
    );
    assert_eq!(
        may_use(&enabled, OWNER, GZ, ImageUse::CreateInstance),
        Ok(())
    );
    assert_eq!(
        may_use(&enabled, FRIEND, GZ, ImageUse::CreateInstance),
        Err("UnauthorizedOperation.ImageNotBelongToAccount")
    );
    assert!(enabled.then_events(disable(OWNER, false)).is_empty());
    assert_eq!(enabled.then_events(share(OWNER, IMG, &[FRIEND])).len(), 1);
}

// --- deletion protection ----------------------------------------------------------

#[test]
fn a_protected_image_is_not_deleted() {
    let protected = after(base(), vec![protect(OWNER, true, false)]);
    assert_eq!(
        protected.then_reason(delete(OWNER, IMG)),
        "FailedOperation.DeletionProtectionEnabled"
    );
    assert!(protected
        .then_events(protect(OWNER, true, false))
        .is_empty());
    let off = after(
        base(),
        vec![protect(OWNER, true, false), protect(OWNER, false, false)],
    );
    assert_eq!(off.then_events(delete(OWNER, IMG)).len(), 1);
    assert_eq!(
        given(base()).then_reason(protect(FRIEND, true, false)),
        "UnauthorizedOperation.ImageNotBelongToAccount"
    );
    assert_eq!(
        given(base()).then_reason(protect(OWNER, true, true)),
        "InvalidParameterValue"
    );
}

#[test]
fn a_cooldown_refuses_delete_until_it_ends() {
    let cooling = after(
        base(),
        vec![protect(OWNER, true, false), protect(OWNER, false, true)],
    );
    let ends = NOW + DELETION_PROTECTION_COOLDOWN;
    assert_eq!(
        cooling
            .state
            .live_image(&img(IMG))
            .map(|i| i.deletion_protection),
        Some(DeletionProtection {
            enabled: false,
            delete_allowed_after: Some(ends),
        })
    );
    let refused = |at| {
        cooling
            .when_at(at, delete(OWNER, IMG))
            .map_err(|e| e.reason())
    };
    assert_eq!(
        refused(NOW).err(),
        Some("FailedOperation.DeletionProtectionCooldown")
    );
    assert_eq!(
        refused(ends - time::Duration::microseconds(1)).err(),
        Some("FailedOperation.DeletionProtectionCooldown")
    );
    assert!(refused(ends).is_ok());
    // Turning protection on again ends the cooldown (delete stays refused).
    let on = after(
        base(),
        vec![
            protect(OWNER, true, false),
            protect(OWNER, false, true),
            protect(OWNER, true, false),
        ],
    );
    assert_eq!(
        on.when_at(ends, delete(OWNER, IMG))
            .map_err(|e| e.reason())
            .err(),
        Some("FailedOperation.DeletionProtectionEnabled")
    );
}

// --- deprecation ------------------------------------------------------------------

#[test]
fn only_an_image_shared_with_nobody_is_deprecated() {
    let shared_with = given(base().into_iter().chain([shared(IMG, &[FRIEND])]));
    assert_eq!(
        shared_with.then_reason(deprecate(OWNER, true)),
        "InvalidImageId.InShared"
    );
    let with_lighthouse = given(
        base()
            .into_iter()
            .chain([Event::LighthouseShared { image_id: img(IMG) }]),
    );
    assert_eq!(
        with_lighthouse.then_reason(deprecate(OWNER, true)),
        "InvalidImageId.InShared"
    );
    assert_eq!(
        given(base()).then_events(deprecate(OWNER, true)),
        vec![Event::ImageDeprecated { image_id: img(IMG) }]
    );
    // A protected image can be deprecated: the two are independent.
    let protected = after(base(), vec![protect(OWNER, true, false)]);
    assert_eq!(protected.then_events(deprecate(OWNER, true)).len(), 1);
}

#[test]
fn a_deprecated_image_is_not_shared_or_copied_but_its_owner_uses_it() {
    let deprecated = after(base(), vec![deprecate(OWNER, true)]);
    for command in [
        share(OWNER, IMG, &[FRIEND]),
        copy(OWNER, IMG, &[SH]),
        lighthouse(OWNER, IMG, LighthousePermission::Share),
    ] {
        assert_eq!(
            deprecated.then_reason(command.clone()),
            "UnsupportedOperation.ImageDeprecated",
            "{command:?}"
        );
    }
    assert_eq!(
        may_use(&deprecated, OWNER, GZ, ImageUse::CreateInstance),
        Ok(())
    );
    assert_eq!(
        deprecated.then_events(rename(OWNER, IMG, "old-web")).len(),
        1
    );
    assert!(deprecated.then_events(deprecate(OWNER, true)).is_empty());
    let undone = after(
        base(),
        vec![deprecate(OWNER, true), deprecate(OWNER, false)],
    );
    assert_eq!(undone.then_events(share(OWNER, IMG, &[FRIEND])).len(), 1);
}

// --- trusted owners ---------------------------------------------------------------

#[test]
fn an_account_sets_its_trusted_owners_sorted_and_checked() {
    let scenario = given(base());
    assert_eq!(
        scenario.then_events(trust(FRIEND, TrustMode::Enforce, &[OTHER, OWNER])),
        vec![trusted_set(FRIEND, TrustMode::Enforce, &[OWNER, OTHER])]
    );
    assert_eq!(
        scenario.then_reason(trust(FRIEND, TrustMode::Audit, &[OWNER, OWNER])),
        "InvalidParameterValue"
    );
    let many: Vec<String> = (0..=MAX_TRUSTED_OWNERS)
        .map(|n| format!("{}", 200_000_000_000u64 + n as u64))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(
        scenario.then_reason(trust(FRIEND, TrustMode::Audit, &many)),
        "InvalidParameterValue.LimitExceeded"
    );
    assert_eq!(
        scenario.then_reason(trust("100000000077", TrustMode::Audit, &[OWNER])),
        "InvalidAccountId.NotFound"
    );
    // The list as it is already: nothing to record, whatever the order given.
    let set = given(base().into_iter().chain([trusted_set(
        FRIEND,
        TrustMode::Enforce,
        &[OWNER, OTHER],
    )]));
    assert!(set
        .then_events(trust(FRIEND, TrustMode::Enforce, &[OTHER, OWNER]))
        .is_empty());
    // Off is the starting point: setting it first changes nothing.
    assert!(scenario
        .then_events(trust(FRIEND, TrustMode::Off, &[]))
        .is_empty());
}

#[test]
fn enforced_trust_refuses_untrusted_owners_images_and_audit_reports_them() {
    let events = || base().into_iter().chain([shared(IMG, &[FRIEND])]);
    let enforce = given(events().chain([trusted_set(FRIEND, TrustMode::Enforce, &[OTHER])]));
    assert_eq!(
        may_use(&enforce, FRIEND, GZ, ImageUse::CreateInstance),
        Err("UnauthorizedOperation.UntrustedImageOwner")
    );
    let recipient_copy = Command::CopyImage {
        caller: acct(FRIEND),
        image_id: img(IMG),
        destination_regions: vec![region(GZ)],
        image_name: Some("mine".into()),
    };
    assert_eq!(
        enforce.then_reason(recipient_copy.clone()),
        "UnauthorizedOperation.UntrustedImageOwner"
    );
    let trusting = given(events().chain([trusted_set(FRIEND, TrustMode::Enforce, &[OWNER])]));
    assert_eq!(
        may_use(&trusting, FRIEND, GZ, ImageUse::CreateInstance),
        Ok(())
    );

    let audit = given(events().chain([trusted_set(FRIEND, TrustMode::Audit, &[])]));
    let allowed = authorize(
        &audit.state,
        &audit.policy,
        &acct(FRIEND),
        &img(IMG),
        &region(GZ),
        ImageUse::CreateInstance,
        NOW,
    )
    .expect("audit mode allows");
    assert_eq!(
        allowed.would_refuse.map(|e| e.reason()),
        Some("UnauthorizedOperation.UntrustedImageOwner")
    );
    assert_eq!(audit.then_events(recipient_copy).len(), 1);
}

#[test]
fn trust_never_affects_an_accounts_own_images() {
    let own = given(
        base()
            .into_iter()
            .chain([trusted_set(OWNER, TrustMode::Enforce, &[])]),
    );
    let allowed = authorize(
        &own.state,
        &own.policy,
        &acct(OWNER),
        &img(IMG),
        &region(GZ),
        ImageUse::Export,
        NOW,
    )
    .expect("its own image");
    assert_eq!(allowed.would_refuse, None);
    assert_eq!(own.then_events(copy(OWNER, IMG, &[SH])).len(), 1);
}

// --- lineage ------------------------------------------------------------------------

#[test]
fn the_owner_sees_the_whole_chain_and_a_recipient_its_part() -> Result<(), DomainError> {
    let scenario = after(
        base(),
        vec![
            // The owner copies IMG to Shanghai (img-new00001), shares the copy.
            copy(OWNER, IMG, &[SH]),
            Command::UpdateImageState {
                image_id: img("img-new00001"),
                state: ImageState::Normal,
            },
            share(OWNER, "img-new00001", &[FRIEND]),
            // The friend copies the shared copy into its own account
            // (img-new00002: the first id is taken).
            Command::CopyImage {
                caller: acct(FRIEND),
                image_id: img("img-new00001"),
                destination_regions: vec![region(SH)],
                image_name: Some("mine".into()),
            },
        ],
    );
    let ids = |l: Lineage| {
        (
            l.links
                .iter()
                .map(|link| link.image_id.to_string())
                .collect::<Vec<_>>(),
            l.truncated,
        )
    };
    let owner = lineage(&scenario.state, &acct(OWNER), &img("img-new00001"), NOW)?;
    assert_eq!(owner.links[1].region, region(GZ));
    assert_eq!(ids(owner), (vec!["img-new00001".into(), IMG.into()], false));
    // The recipient sees the shared copy, not the original behind it.
    assert_eq!(
        ids(lineage(
            &scenario.state,
            &acct(FRIEND),
            &img("img-new00001"),
            NOW
        )?),
        (vec!["img-new00001".into()], true)
    );
    // Its own copy reveals the image it copied, and stops there.
    assert_eq!(
        ids(lineage(
            &scenario.state,
            &acct(FRIEND),
            &img("img-new00002"),
            NOW
        )?),
        (vec!["img-new00002".into(), "img-new00001".into()], true)
    );
    assert_eq!(
        lineage(&scenario.state, &acct(OTHER), &img("img-new00001"), NOW).map_err(|e| e.reason()),
        Err("UnauthorizedOperation.ImageNotBelongToAccount")
    );
    // A deleted source stays in the chain, marked.
    let mut gone = scenario;
    gone.state
        .apply(&Event::ImageDeleted { image_id: img(IMG) });
    let chain = lineage(&gone.state, &acct(OWNER), &img("img-new00001"), NOW)?;
    assert!(chain.links[1].deleted && !chain.links[0].deleted);
    Ok(())
}

// --- shares that end ------------------------------------------------------------------

fn share_until(with: &[&str], end: OffsetDateTime) -> Command {
    Command::ShareImage {
        caller: acct(OWNER),
        image_id: img(IMG),
        account_ids: with.iter().map(|a| acct(a)).collect(),
        expires_at: Some(end),
    }
}

fn use_at(scenario: &Scenario, who: &str, at: OffsetDateTime) -> Result<(), &'static str> {
    authorize(
        &scenario.state,
        &scenario.policy,
        &acct(who),
        &img(IMG),
        &region(GZ),
        ImageUse::CreateInstance,
        at,
    )
    .map(drop)
    .map_err(|e| e.reason())
}

#[test]
fn a_share_ends_exactly_at_its_end_before_anything_is_recorded() {
    let end = NOW + time::Duration::hours(1);
    let scenario = after(base(), vec![share_until(&[FRIEND], end)]);
    let just_before = end - time::Duration::microseconds(1);
    assert_eq!(use_at(&scenario, FRIEND, just_before), Ok(()));
    assert_eq!(
        use_at(&scenario, FRIEND, end),
        Err("UnauthorizedOperation.ImageNotBelongToAccount")
    );
    // Nor may it copy, leave (it is gone), or see the lineage then.
    let copy_mine = Command::CopyImage {
        caller: acct(FRIEND),
        image_id: img(IMG),
        destination_regions: vec![region(GZ)],
        image_name: Some("mine".into()),
    };
    assert_eq!(
        scenario
            .when_at(end, copy_mine)
            .map_err(|e| e.reason())
            .err(),
        Some("UnauthorizedOperation.ImageNotBelongToAccount")
    );
    assert_eq!(
        scenario
            .when_at(end, leave(FRIEND, IMG))
            .map_err(|e| e.reason())
            .err(),
        Some("FailedOperation.AccountNotShared")
    );
    assert!(lineage(&scenario.state, &acct(FRIEND), &img(IMG), end).is_err());
    // The owner may delete or deprecate it from then, and share it again.
    assert!(scenario.when_at(end, delete(OWNER, IMG)).is_ok());
    assert!(scenario.when_at(end, deprecate(OWNER, true)).is_ok());
    assert_eq!(
        scenario
            .when_at(end, share(OWNER, IMG, &[FRIEND]))
            .map(|d| d.events.len()),
        Ok(1)
    );
    assert_eq!(
        scenario.then_reason(delete(OWNER, IMG)),
        "InvalidImageId.InShared"
    );
}

#[test]
fn the_sweep_records_only_shares_that_have_ended() {
    let end = NOW + time::Duration::hours(1);
    let scenario = after(base(), vec![share_until(&[FRIEND, OTHER], end)]);
    let expire = |who: &[&str]| Command::ExpireShares {
        image_id: img(IMG),
        account_ids: who.iter().map(|a| acct(a)).collect(),
    };
    assert_eq!(
        scenario.then_reason(expire(&[FRIEND])),
        "FailedOperation.AccountNotShared"
    );
    assert_eq!(
        scenario
            .when_at(end, expire(&[FRIEND, OTHER]))
            .map(|d| d.events),
        Ok(vec![Event::ShareExpired {
            image_id: img(IMG),
            account_ids: vec![acct(FRIEND), acct(OTHER)],
        }])
    );
    let ended: Vec<_> = scenario.state.ended_shares(end).collect();
    assert_eq!(ended.len(), 2);
    assert!(scenario.state.ended_shares(NOW).next().is_none());
    assert_eq!(scenario.state.next_share_end(), Some(end));
    // Once recorded, they are gone from the index and the listings.
    let mut swept = scenario;
    for event in swept
        .when_at(end, expire(&[FRIEND, OTHER]))
        .expect("ends")
        .events
    {
        swept.state.apply(&event);
    }
    assert_eq!(swept.state.next_share_end(), None);
    assert_eq!(swept.state.shared_count(&acct(FRIEND), &region(GZ)), 0);
}

#[test]
fn the_owner_moves_or_removes_an_end_but_cannot_revive_a_share() {
    let end = NOW + time::Duration::hours(1);
    let later = end + time::Duration::hours(1);
    let scenario = after(base(), vec![share_until(&[FRIEND], end)]);
    let modify = |end: Option<OffsetDateTime>| Command::ModifyShareExpiry {
        caller: acct(OWNER),
        image_id: img(IMG),
        account_ids: vec![acct(FRIEND)],
        expires_at: end,
    };
    assert_eq!(
        scenario.then_events(modify(Some(later))),
        vec![Event::ShareExpiryModified {
            image_id: img(IMG),
            account_ids: vec![acct(FRIEND)],
            expires_at: Some(later),
        }]
    );
    assert!(scenario.then_events(modify(Some(end))).is_empty());
    let forever = after(base(), vec![share_until(&[FRIEND], end), modify(None)]);
    assert_eq!(use_at(&forever, FRIEND, later), Ok(()));
    assert_eq!(forever.state.next_share_end(), None);
    assert_eq!(
        scenario
            .when_at(end, modify(None))
            .map_err(|e| e.reason())
            .err(),
        Some("FailedOperation.AccountNotShared")
    );
    assert_eq!(
        scenario.then_reason(modify(Some(NOW))),
        "InvalidParameterValue"
    );
    assert_eq!(
        given(base()).then_reason(share_until(&[FRIEND], NOW)),
        "InvalidParameterValue"
    );
}

#[test]
fn an_ended_share_frees_its_slot_at_once_and_disable_removes_ends_too() {
    let end = NOW + time::Duration::hours(1);
    let full = after(base(), vec![share_until(&[FRIEND], end)])
        .with_policy(|p| p.max_shares_per_image = 1);
    assert_eq!(full.then_reason(share(OWNER, IMG, &[OTHER])), "OverQuota");
    assert!(full.when_at(end, share(OWNER, IMG, &[OTHER])).is_ok());
    // Disabling cancels a share that ends, and its end leaves the index.
    let disabled = after(
        base(),
        vec![share_until(&[FRIEND], end), disable(OWNER, true)],
    );
    assert_eq!(disabled.state.next_share_end(), None);
}
