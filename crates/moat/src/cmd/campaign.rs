//! `moat campaign …`: firmware rollouts through the admin API.

use super::{print_json, seg};
use crate::cli::{CampaignCmd, Cli};
use crate::client::ApiClient;
use moat_api::dto_ota::{CampaignDeviceView, CampaignInfo, CreateCampaignRequest};

/// The states `show` prints, in flow order.
const COLUMNS: [(&str, &str); 9] = [
    ("pending", "PENDING"),
    ("notified", "NOTIFIED"),
    ("downloading", "DOWNLOADING"),
    ("installed", "INSTALLED"),
    ("confirmed", "CONFIRMED"),
    ("failed", "FAILED"),
    ("rolled_back", "ROLLED-BACK"),
    ("skipped", "SKIPPED"),
    ("cancelled", "CANCELLED"),
];

pub async fn run(cli: &Cli, cmd: &CampaignCmd) -> anyhow::Result<()> {
    let api = ApiClient::from_cli(cli)?;
    match cmd {
        CampaignCmd::Create {
            firmware,
            target,
            waves,
            success_threshold,
            abort_threshold,
        } => {
            let req = CreateCampaignRequest {
                firmware: firmware.clone(),
                target: target.clone(),
                waves: waves.clone(),
                success_threshold: Some(*success_threshold),
                abort_threshold: Some(*abort_threshold),
            };
            let c: CampaignInfo = api.post("/api/v1/campaigns", &req).await?;
            if cli.json {
                return print_json(&c);
            }
            let devices: u64 = c.progress.iter().map(|w| w.devices).sum();
            println!(
                "campaign {} created: firmware {}, {devices} devices in {} waves; wave 1 notified",
                c.id, c.firmware, c.waves
            );
            Ok(())
        }
        CampaignCmd::List => {
            let list: Vec<CampaignInfo> = api.get("/api/v1/campaigns").await?;
            if cli.json {
                return print_json(&list);
            }
            println!(
                "{:<17} {:<16} {:<10} {:<6} TARGET",
                "ID", "FIRMWARE", "STATE", "WAVE"
            );
            for c in list {
                println!(
                    "{:<17} {:<16} {:<10} {:<6} {}",
                    c.id,
                    c.firmware,
                    c.state,
                    format!("{}/{}", c.current_wave, c.waves),
                    c.target
                );
            }
            Ok(())
        }
        CampaignCmd::Show { id, devices } => {
            let c: CampaignInfo = api.get(&format!("/api/v1/campaigns/{}", seg(id))).await?;
            let list: Vec<CampaignDeviceView> = if *devices {
                api.get(&format!("/api/v1/campaigns/{}/devices", seg(id)))
                    .await?
            } else {
                Vec::new()
            };
            if cli.json {
                return print_json(&serde_json::json!({ "campaign": c, "devices": list }));
            }
            show(&c, &list);
            Ok(())
        }
        CampaignCmd::Pause { id } => control(&api, cli, id, "pause").await,
        CampaignCmd::Resume { id } => control(&api, cli, id, "resume").await,
        CampaignCmd::Cancel { id } => control(&api, cli, id, "cancel").await,
    }
}

async fn control(api: &ApiClient, cli: &Cli, id: &str, action: &str) -> anyhow::Result<()> {
    let c: CampaignInfo = api
        .post(&format!("/api/v1/campaigns/{}/{action}", seg(id)), &())
        .await?;
    if cli.json {
        return print_json(&c);
    }
    println!("campaign {} is {}", c.id, c.state);
    Ok(())
}

fn show(c: &CampaignInfo, devices: &[CampaignDeviceView]) {
    println!(
        "campaign {}  firmware {}  target {}\nstate {}  wave {}/{}  success threshold {}%  abort threshold {}%",
        c.id,
        c.firmware,
        c.target,
        c.state,
        c.current_wave,
        c.waves,
        c.success_threshold,
        c.abort_threshold
    );
    if let Some(r) = &c.reason {
        println!("reason: {r}");
    }
    print!("{:<5} {:>7}", "WAVE", "DEVICES");
    for (_, title) in COLUMNS {
        print!(" {title:>11}");
    }
    println!();
    for w in &c.progress {
        print!("{:<5} {:>7}", w.wave, w.devices);
        for (key, _) in COLUMNS {
            print!(" {:>11}", w.states.get(key).copied().unwrap_or(0));
        }
        println!();
    }
    if !devices.is_empty() {
        println!("\n{:<32} {:<5} {:<12} REASON", "DEVICE", "WAVE", "STATE");
        for d in devices {
            println!(
                "{:<32} {:<5} {:<12} {}",
                d.device_id,
                d.wave,
                d.state,
                d.reason.as_deref().unwrap_or("")
            );
        }
    }
}
