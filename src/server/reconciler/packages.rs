//! Agent upgrades between the registry and the planner: what an agent reports of its packages
//! is folded into its record (unless it answers an offer this server never made), and the
//! offers the plan makes are encoded once and handed to the registry.

use std::collections::BTreeMap;
use std::sync::Arc;

use gitamp_core::ConfigHash;
use gitamp_core::plan::upgrade::{Offer, PackageState, ReportedPackage};
use gitamp_core::plan::{Desired, ObservedAgent, RolloutPhase};
use gitamp_opamp::fleet::unix_ms;
use gitamp_opamp::packages::{OfferParts, PackageOffer, PackageReport, PackageStatusKind};
use gitamp_opamp::proto::AgentCapabilities;
use gitamp_opamp::{AgentSnapshot, Delivery, Uid, wire::uid_text};
use tracing::warn;

use super::Reconciler;
use crate::server::events::{Event, Masked};

/// Offers kept encoded; the cache is dropped whole when it reaches this (a few revisions'
/// worth of versions and platforms).
const MAX_CACHED_OFFERS: usize = 256;

/// What [`fold`] did with an agent's package statuses.
pub(super) enum Folded {
    /// Nothing new, or folded in.
    Nothing,
    /// The report answers an offer this server never made (hex of its all-packages hash):
    /// nothing of it was recorded.
    Ignored(String),
}

/// Fold the snapshot's capabilities, package statuses and last offer into the agent's record.
pub(super) fn fold(snap: &AgentSnapshot, agent: &mut ObservedAgent, desired: &Desired) -> Folded {
    let caps = snap.capabilities;
    agent.packages.accepts = caps & AgentCapabilities::AcceptsPackages as u64 != 0
        && caps & AgentCapabilities::ReportsPackageStatuses as u64 != 0;
    if let Some(sent) = snap.last_offer {
        let (hash, at) = (ConfigHash(sent.hash), unix_ms(sent.at));
        if agent.packages.sent != Some(hash) || agent.packages.sent_at != Some(at) {
            agent.packages.note_offer(hash, at, Some(sent.conn));
        }
    }
    let Some(report) = &snap.package_statuses else {
        return Folded::Nothing;
    };
    let all_hash = ConfigHash::from_slice(&report.all_hash);
    if all_hash == agent.packages.reported_all_hash && same_packages(report, agent) {
        return Folded::Nothing;
    }
    if !report.all_hash.is_empty() && !offered(all_hash, agent, desired) {
        let hex = hex::encode(&report.all_hash);
        if agent.packages.ignored.as_deref() == Some(hex.as_str()) {
            return Folded::Nothing;
        }
        agent.packages.ignored = Some(hex.clone());
        return Folded::Ignored(hex);
    }
    agent.packages.ignored = None;
    agent.packages.observe(all_hash, reported(report));
    Folded::Nothing
}

/// Whether `all_hash` is an offer this server made, or would make, to this agent: the last one
/// sent, or the offer of any version Git declares for its platform (a restart forgets what
/// was sent, not what is declared).
fn offered(all_hash: Option<ConfigHash>, agent: &ObservedAgent, desired: &Desired) -> bool {
    let Some(h) = all_hash else {
        return false;
    };
    agent.packages.sent == Some(h)
        || desired
            .versions
            .values()
            .filter_map(|v| Offer::of(v, &agent.labels))
            .any(|o| o.all_hash == h)
}

fn same_packages(report: &PackageReport, agent: &ObservedAgent) -> bool {
    reported(report) == agent.packages.reported
}

fn reported(report: &PackageReport) -> BTreeMap<String, ReportedPackage> {
    report
        .packages
        .iter()
        .map(|(name, p)| {
            (
                name.clone(),
                ReportedPackage {
                    has_version: p.has_version.clone(),
                    offered_version: p.offered_version.clone(),
                    offered_hash: ConfigHash::from_slice(&p.offered_hash),
                    state: match p.status {
                        PackageStatusKind::Installed => PackageState::Installed,
                        PackageStatusKind::InstallPending => PackageState::InstallPending,
                        PackageStatusKind::Installing => PackageState::Installing,
                        PackageStatusKind::InstallFailed => PackageState::InstallFailed,
                        // An unknown value is in progress, never a verdict.
                        PackageStatusKind::Downloading | PackageStatusKind::Unknown => {
                            PackageState::Downloading
                        }
                    },
                    error: p.error.clone(),
                },
            )
        })
        .collect()
}

impl Reconciler {
    /// Hand the offers the plan makes to the registry; one queued on a WebSocket is recorded
    /// at once, one that waits for a reply when the reply carries it.
    pub(super) fn offer_packages(&mut self, replanned: &[Uid]) {
        let Some(planner) = self.planner.as_mut() else {
            return;
        };
        let mut queued = Vec::new();
        for uid in replanned {
            let Some((_, Some(plan))) = planner.agent(uid) else {
                continue;
            };
            let Some(up) = plan.upgrade.as_ref() else {
                continue;
            };
            let Some(offer) = up.offer.as_ref() else {
                continue;
            };
            if self.offers_handed.get(uid) == Some(&offer.all_hash) {
                continue;
            }
            if self.offers.len() >= MAX_CACHED_OFFERS && !self.offers.contains_key(&offer.all_hash)
            {
                self.offers.clear();
            }
            let encoded = Arc::clone(
                self.offers
                    .entry(offer.all_hash)
                    .or_insert_with(|| Arc::new(encode(offer))),
            );
            let rollback = offer.version.version != up.desired_version;
            match self.fleet.offer(uid, encoded) {
                Delivery::Queued(s) => {
                    self.offers_handed.remove(uid);
                    queued.push((*uid, offer.all_hash, unix_ms(s.at), s.conn));
                }
                Delivery::Pending => {
                    self.offers_handed.insert(*uid, offer.all_hash);
                }
                Delivery::Dropped | Delivery::Unknown => {
                    self.offers_handed.remove(uid);
                    warn!(agent = %uid_text(uid), "package offer dropped: the agent no longer accepts packages");
                    continue;
                }
            }
            self.state.emit(Event::PackageOffered {
                agent: *uid,
                version: offer.version.version.clone(),
                rollback,
            });
        }
        for (uid, hash, at, conn) in queued {
            planner.note_offer(&uid, hash, at, Some(conn));
        }
        if planner.adopts_rollouts() {
            // Several replicas: the leader steps the upgrades and says when one halts.
            return;
        }
        for (name, rollout) in planner.upgrades() {
            let RolloutPhase::Halted { reason } = &rollout.phase else {
                self.halted_upgrades.remove(name);
                continue;
            };
            if self.halted_upgrades.insert(name.clone()) {
                let version = planner
                    .desired()
                    .configurations
                    .get(name)
                    .and_then(|c| c.version.as_ref())
                    .map_or_else(String::new, |v| v.version.clone());
                self.state.emit(Event::RolloutHalted {
                    configuration: name.clone(),
                    reason: format!("upgrade to agent version {version}: {reason}"),
                });
            }
        }
        let names = planner.upgrades();
        self.halted_upgrades.retain(|n| names.contains_key(n));
    }
}

/// The wire form of an offer, from the plan's (built from the validated declaration only).
fn encode(offer: &Offer) -> PackageOffer {
    PackageOffer::new(OfferParts {
        name: &offer.version.package,
        version: &offer.version.version,
        url: &offer.file.url,
        content_hash: offer.file.sha256,
        signature: offer.file.signature.as_deref().map(str::as_bytes),
        package_hash: offer.package_hash.0,
        all_hash: offer.all_hash.0,
    })
}

/// The upgrade transition of one agent as an event, if it is one people want to see.
pub(super) fn upgrade_event(
    uid: Uid,
    status: gitamp_core::plan::upgrade::UpgradeStatus,
    version: &str,
    reason: Option<&str>,
    secrets: &[String],
) -> Option<Event> {
    use gitamp_core::plan::upgrade::UpgradeStatus as U;
    match status {
        U::Upgraded => Some(Event::Upgraded {
            agent: uid,
            version: version.to_string(),
        }),
        U::UpgradeFailed => Some(Event::UpgradeFailed {
            agent: uid,
            version: version.to_string(),
            error: Masked::new(reason.unwrap_or("no error message"), secrets),
        }),
        _ => None,
    }
}
