//! Agent upgrades: a configuration's pinned AgentVersion, offered to each agent it selects as
//! an OpAMP package, rolled out with the configuration's own rollout policy.
//!
//! An upgrade is a second [`Rollout`](crate::plan::rollout::Rollout) per configuration whose
//! target is the version's [`DesiredVersion::target`] (a hash of the whole declaration), stepped
//! by the same state machine over the agents' [`UpgradeStatus`] mapped onto sync statuses:
//! upgraded is synced, upgrading is applying, upgrade-failed and rolled-back are failures (so
//! `maxFailures` halts an upgrade as it halts a config change). What an agent is offered is
//! built here from the validated declaration only ([`Offer::of`]): the file's `content_hash` is
//! the declared SHA-256, and the package's `hash` and the `all_packages_hash` are derived
//! deterministically from what Git declares (same declaration, same hashes, on every replica).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::agent_version::{AgentVersion, sha256_bytes};
use crate::catalog::model::OnFailure;
use crate::config_map::ConfigHash;
use crate::plan::Timing;
use crate::plan::observed::ObservedAgent;
use crate::plan::rollout::AgentProgress;
use crate::plan::selector::Labels;
use crate::plan::status::SyncStatus;

/// The agent label naming its operating system (OpenTelemetry semantic conventions).
pub const OS_LABEL: &str = "os.type";
/// The agent label naming its CPU architecture.
pub const ARCH_LABEL: &str = "host.arch";
/// Packages kept per agent from its reports (an agent may report others than ours).
pub const MAX_REPORTED_PACKAGES: usize = 16;

/// One platform's file, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFile {
    /// `DownloadableFile.download_url`.
    pub url: String,
    /// `DownloadableFile.content_hash`: the declared SHA-256 of the file.
    pub sha256: [u8; 32],
    /// `DownloadableFile.signature`, as declared.
    pub signature: Option<String>,
}

/// A declared AgentVersion as the plan offers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredVersion {
    /// The AgentVersion's name.
    pub name: String,
    /// The version string agents report once installed.
    pub version: String,
    /// The OpAMP package name.
    pub package: String,
    /// Files by (os, arch).
    pub platforms: BTreeMap<(String, String), PackageFile>,
    /// Identifies the declaration (the upgrade rollout's target).
    pub target: ConfigHash,
}

impl DesiredVersion {
    /// From a validated AgentVersion; `None` if a platform's hash does not parse (validation
    /// rejects the revision then, so this never offers a malformed hash).
    pub fn of(v: &AgentVersion) -> Option<DesiredVersion> {
        let mut platforms = BTreeMap::new();
        let mut h = Sha256::new();
        h.update(b"gitamp-agent-version-v1");
        part(&mut h, v.spec.package_name().as_bytes());
        part(&mut h, v.spec.version.as_bytes());
        for p in &v.spec.platforms {
            let file = PackageFile {
                url: p.url.clone(),
                sha256: sha256_bytes(&p.sha256)?,
                signature: p.signature.clone(),
            };
            for b in [p.os.as_bytes(), p.arch.as_bytes(), p.url.as_bytes()] {
                part(&mut h, b);
            }
            part(&mut h, &file.sha256);
            part(&mut h, p.signature.as_deref().unwrap_or("").as_bytes());
            platforms.insert((p.os.clone(), p.arch.clone()), file);
        }
        Some(DesiredVersion {
            name: v.metadata.name.clone(),
            version: v.spec.version.clone(),
            package: v.spec.package_name().to_string(),
            platforms,
            target: ConfigHash(h.finalize().into()),
        })
    }
}

fn part(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// What one agent is offered: one top-level package for its platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The version offered.
    pub version: Arc<DesiredVersion>,
    /// Its file for the agent's platform.
    pub file: PackageFile,
    /// `PackageAvailable.hash`.
    pub package_hash: ConfigHash,
    /// `PackagesAvailable.all_packages_hash`: what the agent echoes while it works on the offer.
    pub all_hash: ConfigHash,
}

impl Offer {
    /// The offer of `version` to an agent labelled `labels`, if a file for its platform
    /// (`os.type`, `host.arch`) is declared.
    pub fn of(version: &Arc<DesiredVersion>, labels: &Labels) -> Option<Offer> {
        let os = labels.get(OS_LABEL)?;
        let arch = labels.get(ARCH_LABEL)?;
        let file = version.platforms.get(&(os.clone(), arch.clone()))?.clone();
        let mut h = Sha256::new();
        h.update(b"gitamp-package-v1");
        for b in [
            version.package.as_bytes(),
            version.version.as_bytes(),
            file.url.as_bytes(),
            &file.sha256,
            file.signature.as_deref().unwrap_or("").as_bytes(),
        ] {
            part(&mut h, b);
        }
        let package_hash = ConfigHash(h.finalize().into());
        let mut h = Sha256::new();
        h.update(b"gitamp-packages-v1");
        part(&mut h, version.package.as_bytes());
        part(&mut h, &package_hash.0);
        Some(Offer {
            version: Arc::clone(version),
            file,
            package_hash,
            all_hash: ConfigHash(h.finalize().into()),
        })
    }
}

/// `PackageStatus.status` as reported (OpAMP `PackageStatusEnum`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PackageState {
    /// Installed (0).
    #[default]
    Installed,
    /// InstallPending (1).
    InstallPending,
    /// Installing (2).
    Installing,
    /// InstallFailed (3).
    InstallFailed,
    /// Downloading (4).
    Downloading,
}

/// One package of the agent's last `PackageStatuses`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct ReportedPackage {
    /// `agent_has_version`: what it runs.
    pub has_version: String,
    /// `server_offered_version`.
    pub offered_version: String,
    /// `server_offered_hash`, when it is one of ours (32 bytes).
    pub offered_hash: Option<ConfigHash>,
    /// `status`.
    pub state: PackageState,
    /// `error_message`.
    pub error: String,
}

/// The package facts of one agent, part of its one record ([`ObservedAgent::packages`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentPackages {
    /// Capabilities AcceptsPackages and ReportsPackageStatuses: without both nothing is
    /// offered (the spec forbids offering, and an offer nobody reports on cannot be followed).
    pub accepts: bool,
    /// Its last reported packages by name (at most [`MAX_REPORTED_PACKAGES`]).
    pub reported: BTreeMap<String, ReportedPackage>,
    /// `server_provided_all_packages_hash` of its last report: the offer it worked on.
    pub reported_all_hash: Option<ConfigHash>,
    /// Offers (all-packages hashes) it failed: never offered again, like a failed config.
    pub failed: BTreeSet<ConfigHash>,
    /// The offer last sent, when (ms since the Unix epoch) and on which connection.
    pub sent: Option<ConfigHash>,
    /// When `sent` went out.
    pub sent_at: Option<u64>,
    /// The connection `sent` went out on.
    pub sent_on: Option<u64>,
    /// The all-packages hash (hex) of its last report that answered an offer this server never
    /// made: ignored, nothing of it recorded (kept so the event is emitted once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
}

impl AgentPackages {
    /// Fold in a `PackageStatuses` report (already known to answer one of our offers, or to
    /// carry no offer at all: see the reconciler). An InstallFailed for the offer the agent
    /// worked on marks that offer failed, unless the agent runs the offered version anyway
    /// (opamp-go keeps a stale InstallFailed on a package it skipped as already installed).
    pub fn observe(
        &mut self,
        all_hash: Option<ConfigHash>,
        packages: BTreeMap<String, ReportedPackage>,
    ) {
        for p in packages.values() {
            if p.state == PackageState::InstallFailed
                && let Some(h) = all_hash
                && p.offered_hash.is_some()
                && p.has_version != p.offered_version
            {
                self.failed.insert(h);
            }
        }
        self.reported = packages.into_iter().take(MAX_REPORTED_PACKAGES).collect();
        self.reported_all_hash = all_hash;
    }

    /// Record an offer sent at `now_ms` on connection `on`.
    pub fn note_offer(&mut self, all_hash: ConfigHash, now_ms: u64, on: Option<u64>) {
        self.sent = Some(all_hash);
        self.sent_at = Some(now_ms);
        self.sent_on = on;
    }

    /// The version it reports running for `package`, if any.
    pub fn installed(&self, package: &str) -> Option<&str> {
        self.reported
            .get(package)
            .map(|p| p.has_version.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The agent version it runs, as people read it: of `pinned` (the package its
    /// configuration's version names), else of the first package it reports.
    pub fn running(&self, pinned: Option<&str>) -> Option<&str> {
        pinned.and_then(|p| self.installed(p)).or_else(|| {
            self.reported
                .values()
                .map(|p| p.has_version.as_str())
                .find(|v| !v.is_empty())
        })
    }
}

/// Where one agent stands against its configuration's pinned version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpgradeStatus {
    /// It runs the pinned version.
    Upgraded,
    /// It should be offered the version; the rollout may not have reached it.
    Pending,
    /// Offered; downloading or installing.
    Upgrading,
    /// It reported InstallFailed for the offer.
    UpgradeFailed,
    /// It failed the offer and was given its previous version back.
    RolledBack,
    /// It lacks AcceptsPackages or ReportsPackageStatuses.
    Incompatible,
    /// No file is declared for its `os.type`/`host.arch`.
    NoPackage,
    /// Not connected.
    Disconnected,
}

impl UpgradeStatus {
    /// The name the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            UpgradeStatus::Upgraded => "upgraded",
            UpgradeStatus::Pending => "pending",
            UpgradeStatus::Upgrading => "upgrading",
            UpgradeStatus::UpgradeFailed => "upgrade-failed",
            UpgradeStatus::RolledBack => "rolled-back",
            UpgradeStatus::Incompatible => "incompatible",
            UpgradeStatus::NoPackage => "no-package",
            UpgradeStatus::Disconnected => "disconnected",
        }
    }

    /// The sync status the rollout state machine reads for it: upgraded counts as done,
    /// upgrading holds the batch, failures count against `maxFailures`; the rest is inert.
    pub fn as_sync(self) -> SyncStatus {
        match self {
            UpgradeStatus::Upgraded => SyncStatus::Synced,
            UpgradeStatus::Pending => SyncStatus::Pending,
            UpgradeStatus::Upgrading => SyncStatus::Applying,
            UpgradeStatus::UpgradeFailed => SyncStatus::Failed,
            UpgradeStatus::RolledBack => SyncStatus::RolledBack,
            UpgradeStatus::Incompatible => SyncStatus::Incompatible,
            UpgradeStatus::NoPackage => SyncStatus::Unmanaged,
            UpgradeStatus::Disconnected => SyncStatus::Disconnected,
        }
    }
}

/// One agent's upgrade plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradePlan {
    /// The version its configuration pins.
    pub desired_version: String,
    /// Where it stands.
    pub status: UpgradeStatus,
    /// Send this offer now (an all-packages hash: the desired version's, or on a rollback the
    /// previous one's).
    #[serde(skip)]
    pub offer: Option<Offer>,
    /// Why, for people (the agent's error, what it waits for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Plan it again then (ms since the Unix epoch): a held-back re-offer may go out.
    #[serde(skip)]
    pub requeue_at: Option<u64>,
}

/// Where `agent` stands in the upgrade rollout to `version`, or `None` when no upgrade rollout
/// counts it (incompatible, no package for its platform). The one rule for a server's own
/// upgrade rollouts and the leader's fleet-wide ones.
pub fn upgrade_progress(
    agent: &ObservedAgent,
    version: &Arc<DesiredVersion>,
    status: UpgradeStatus,
) -> Option<AgentProgress> {
    if matches!(
        status,
        UpgradeStatus::Incompatible | UpgradeStatus::NoPackage
    ) {
        return None;
    }
    let failed_target = Offer::of(version, &agent.labels)
        .is_some_and(|o| agent.packages.failed.contains(&o.all_hash));
    Some(AgentProgress {
        status: status.as_sync(),
        healthy: agent.healthy,
        failed_target,
    })
}

/// Where `agent` stands against `version` (without a rollout: that is [`plan_upgrade`]).
pub fn upgrade_status(agent: &ObservedAgent, version: &Arc<DesiredVersion>) -> UpgradeStatus {
    let p = &agent.packages;
    if !agent.connected {
        return UpgradeStatus::Disconnected;
    }
    if !p.accepts {
        return UpgradeStatus::Incompatible;
    }
    let Some(offer) = Offer::of(version, &agent.labels) else {
        return UpgradeStatus::NoPackage;
    };
    let reported = p.reported.get(&version.package);
    if reported.is_some_and(|r| r.has_version == version.version) {
        return UpgradeStatus::Upgraded;
    }
    let on_offer = reported.is_some_and(|r| r.offered_hash == Some(offer.package_hash));
    if p.failed.contains(&offer.all_hash) {
        return if on_offer {
            UpgradeStatus::UpgradeFailed
        } else {
            UpgradeStatus::RolledBack
        };
    }
    match reported {
        Some(r) if on_offer && r.state == PackageState::InstallFailed => {
            UpgradeStatus::UpgradeFailed
        }
        Some(_) if on_offer => UpgradeStatus::Upgrading,
        _ if p.sent == Some(offer.all_hash) => UpgradeStatus::Upgrading,
        _ => UpgradeStatus::Pending,
    }
}

/// Plan one agent's upgrade to `version`, given whether the upgrade rollout admits it.
///
/// - Pending and admitted → offer the version.
/// - Upgrade-failed with `OnFailure::Rollback` → offer the version the agent still reports
///   running, when Git declares it (`versions`, by version string) for its platform: the agent
///   goes back to a declared state. Never the failed offer again.
/// - A sent offer the agent has not answered goes again on a new connection, or to a polling
///   agent after `timing.poll_resend_after_ms` (its reply may have been lost).
pub fn plan_upgrade(
    agent: &ObservedAgent,
    version: &Arc<DesiredVersion>,
    versions: &BTreeMap<String, Arc<DesiredVersion>>,
    admitted: bool,
    on_failure: OnFailure,
    timing: Timing,
) -> UpgradePlan {
    let status = upgrade_status(agent, version);
    let reported = agent.packages.reported.get(&version.package);
    let detail = match status {
        UpgradeStatus::UpgradeFailed | UpgradeStatus::RolledBack => reported
            .filter(|r| !r.error.is_empty())
            .map(|r| r.error.clone()),
        UpgradeStatus::NoPackage => Some(format!(
            "no package of {} for {}/{}",
            version.name,
            agent.labels.get(OS_LABEL).map_or("?", String::as_str),
            agent.labels.get(ARCH_LABEL).map_or("?", String::as_str)
        )),
        UpgradeStatus::Pending if !admitted => Some("waiting for the rollout".into()),
        _ => None,
    };
    let candidate = match status {
        UpgradeStatus::Pending if admitted => Offer::of(version, &agent.labels),
        UpgradeStatus::Upgrading if admitted => Offer::of(version, &agent.labels),
        UpgradeStatus::UpgradeFailed if on_failure == OnFailure::Rollback => reported
            .and_then(|r| versions.get(&r.has_version))
            .filter(|prev| prev.version != version.version)
            .and_then(|prev| Offer::of(prev, &agent.labels)),
        _ => None,
    };
    let (offer, requeue_at) = match candidate {
        Some(o) => match offer_decision(agent, &o, timing) {
            OfferDecision::Now => (Some(o), None),
            OfferDecision::At(t) => (None, Some(t)),
            OfferDecision::Not => (None, None),
        },
        None => (None, None),
    };
    UpgradePlan {
        desired_version: version.version.clone(),
        status,
        offer,
        detail,
        requeue_at,
    }
}

enum OfferDecision {
    Now,
    At(u64),
    Not,
}

/// The push rule for offers: never a failed offer, never one the agent already works on, once
/// per connection, and again to a polling agent only after the poll window.
fn offer_decision(agent: &ObservedAgent, offer: &Offer, timing: Timing) -> OfferDecision {
    let p = &agent.packages;
    if !agent.connected
        || !p.accepts
        || p.failed.contains(&offer.all_hash)
        || p.reported_all_hash == Some(offer.all_hash)
    {
        return OfferDecision::Not;
    }
    if p.sent != Some(offer.all_hash) {
        return OfferDecision::Now;
    }
    let Some(at) = p.sent_at else {
        return OfferDecision::Now;
    };
    if agent.polls {
        let due = at.saturating_add(timing.poll_resend_after_ms);
        return if timing.now_ms >= due {
            OfferDecision::Now
        } else {
            OfferDecision::At(due)
        };
    }
    if p.sent_on.is_some() && p.sent_on != agent.connection {
        OfferDecision::Now
    } else {
        OfferDecision::Not
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::agent_version::{AgentVersionSpec, PlatformPackage};
    use crate::catalog::model::Metadata;

    fn version(v: &str, sha: u8) -> Arc<DesiredVersion> {
        let av = AgentVersion {
            metadata: Metadata {
                name: format!("v{v}"),
                ..Default::default()
            },
            spec: AgentVersionSpec {
                version: v.into(),
                package: None,
                platforms: vec![PlatformPackage {
                    os: "linux".into(),
                    arch: "amd64".into(),
                    url: format!("http://pkg/{v}"),
                    sha256: hex::encode([sha; 32]),
                    signature: None,
                }],
            },
            origin: Default::default(),
        };
        Arc::new(DesiredVersion::of(&av).expect("valid"))
    }

    fn agent() -> ObservedAgent {
        let mut a = ObservedAgent::new("a");
        a.labels.insert(OS_LABEL.into(), "linux".into());
        a.labels.insert(ARCH_LABEL.into(), "amd64".into());
        a.packages.accepts = true;
        a.connection = Some(1);
        a
    }

    fn report(a: &mut ObservedAgent, o: &Offer, has: &str, state: PackageState, err: &str) {
        let p = ReportedPackage {
            has_version: has.into(),
            offered_version: o.version.version.clone(),
            offered_hash: Some(o.package_hash),
            state,
            error: err.into(),
        };
        a.packages
            .observe(Some(o.all_hash), BTreeMap::from([("collector".into(), p)]));
    }

    #[test]
    fn hashes_are_deterministic_and_follow_the_declaration() {
        let (a, b, c) = (version("1", 1), version("1", 1), version("1", 2));
        assert_eq!(a.target, b.target);
        assert_ne!(a.target, c.target);
        let labels = agent().labels;
        let (oa, oc) = (
            Offer::of(&a, &labels).expect("offer"),
            Offer::of(&c, &labels).expect("offer"),
        );
        assert_eq!(oa.file.sha256, [1; 32]);
        assert_ne!(oa.all_hash, oc.all_hash);
        assert!(Offer::of(&a, &Labels::new()).is_none());
    }

    #[test]
    fn offer_install_fail_and_roll_back() {
        let (v1, v2) = (version("1", 1), version("2", 2));
        let versions = BTreeMap::from([("1".into(), v1.clone()), ("2".into(), v2.clone())]);
        let t = Timing::at(1000);
        let mut a = agent();
        // Not admitted: waits; admitted: offered once per connection.
        let p = plan_upgrade(&a, &v2, &versions, false, OnFailure::Rollback, t);
        assert_eq!(
            (p.status, p.offer.is_none()),
            (UpgradeStatus::Pending, true)
        );
        let p = plan_upgrade(&a, &v2, &versions, true, OnFailure::Rollback, t);
        let o2 = p.offer.expect("offered");
        a.packages.note_offer(o2.all_hash, 1000, Some(1));
        let p = plan_upgrade(&a, &v2, &versions, true, OnFailure::Rollback, t);
        assert_eq!(
            (p.status, p.offer.is_none()),
            (UpgradeStatus::Upgrading, true)
        );
        // It runs v1 and fails v2: upgrade-failed with its error, and v1 is offered back.
        report(
            &mut a,
            &o2,
            "1",
            PackageState::InstallFailed,
            "hash mismatch",
        );
        let p = plan_upgrade(&a, &v2, &versions, true, OnFailure::Rollback, t);
        assert_eq!(p.status, UpgradeStatus::UpgradeFailed);
        assert_eq!(p.detail.as_deref(), Some("hash mismatch"));
        let back = p.offer.expect("rollback offer");
        assert_eq!(back.version.version, "1");
        // With Keep nothing is offered; the failed offer is never offered again.
        let p = plan_upgrade(&a, &v2, &versions, true, OnFailure::Keep, t);
        assert!(p.offer.is_none());
        // The agent processes the rollback offer: rolled back.
        let o1 = Offer::of(&v1, &a.labels).expect("offer");
        report(&mut a, &o1, "1", PackageState::Installed, "");
        let p = plan_upgrade(&a, &v2, &versions, true, OnFailure::Rollback, t);
        assert_eq!(p.status, UpgradeStatus::RolledBack);
        assert!(p.offer.is_none());
    }

    #[test]
    fn installed_and_incompatible() {
        let v1 = version("1", 1);
        let versions = BTreeMap::new();
        let t = Timing::at(0);
        let mut a = agent();
        let o1 = Offer::of(&v1, &a.labels).expect("offer");
        report(&mut a, &o1, "1", PackageState::Installed, "");
        let p = plan_upgrade(&a, &v1, &versions, true, OnFailure::Rollback, t);
        assert_eq!(
            (p.status, p.offer.is_none()),
            (UpgradeStatus::Upgraded, true)
        );
        a.packages.accepts = false;
        assert_eq!(upgrade_status(&a, &v1), UpgradeStatus::Incompatible);
    }

    /// The planner rolls an upgrade out with the configuration's policy: batches of one, and
    /// the first failure halts it, so the second agent is never offered the version.
    #[test]
    fn the_planner_batches_an_upgrade_and_halts_on_a_failure() {
        use crate::catalog::model::{Quantity, RolloutPolicy, RolloutStrategy, Selector};
        use crate::plan::desired::{Desired, DesiredConfig};
        use crate::plan::observed::ReportedStatus;
        use crate::plan::planner::Planner;
        use crate::plan::rollout::RolloutPhase;

        let config = ConfigHash([7; 32]);
        let v2 = version("2", 2);
        let policy = RolloutPolicy {
            strategy: RolloutStrategy::Batched,
            batch_size: Some(Quantity::Count(1)),
            max_failures: Some(Quantity::Count(0)),
            ..Default::default()
        };
        let desired = Desired::new(
            "r1",
            [
                DesiredConfig::new("edge", Selector::default(), 0, policy, Some(config))
                    .with_version(Some(v2.clone())),
            ],
        );
        let mut planner: Planner<String> = Planner::new(Arc::new(desired), BTreeMap::new());
        for uid in ["a", "b"] {
            let mut a = agent();
            a.instance_uid = uid.into();
            a.observe_remote_config_status(&config.0, ReportedStatus::Applied, 0);
            planner.upsert(uid.to_string(), a);
        }
        let offered = |p: &Planner<String>, uid: &str| {
            p.agent(&uid.to_string())
                .and_then(|(_, plan)| plan)
                .and_then(|plan| plan.upgrade.as_ref())
                .and_then(|u| u.offer.clone())
        };
        let t = Timing::at(1000);
        planner.plan(t);
        let o = offered(&planner, "a").expect("the first batch is offered the version");
        assert!(offered(&planner, "b").is_none(), "the second batch waits");
        planner.note_offer(&"a".to_string(), o.all_hash, 1000, Some(1));
        planner.plan(t);
        planner.update("a".to_string(), |a| {
            report(
                a,
                &o,
                "",
                PackageState::InstallFailed,
                "content hash mismatch",
            );
            false
        });
        planner.plan(t);
        let (_, plan) = planner.agent(&"a".to_string()).expect("known");
        let up = plan
            .and_then(|p| p.upgrade.as_ref())
            .expect("upgrade planned");
        assert_eq!(up.status, UpgradeStatus::UpgradeFailed);
        assert_eq!(up.detail.as_deref(), Some("content hash mismatch"));
        assert!(matches!(
            planner.upgrades()["edge"].phase,
            RolloutPhase::Halted { .. }
        ));
        assert!(
            offered(&planner, "b").is_none(),
            "halted: nobody else is offered"
        );
        let (_, plan) = planner.agent(&"b".to_string()).expect("known");
        let b = plan
            .and_then(|p| p.upgrade.as_ref())
            .expect("upgrade planned");
        assert_eq!(b.status, UpgradeStatus::Pending);
    }
}
