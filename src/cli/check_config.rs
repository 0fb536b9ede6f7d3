//! cli: `exflow check-config`, validates the configuration (file, flags, environment) and
//! the files it names, and prints the effective configuration. With `--connect`, also the
//! Kafka broker and topic.

use super::CheckConfigArgs;

pub fn run(args: CheckConfigArgs) -> anyhow::Result<()> {
    let config = args.shared.load()?;
    config.enricher()?;
    if let Some(path) = &config.sink.file {
        exflow::sink::JsonLines::file(path)?;
    }
    if let Some(kafka) = &config.sink.kafka {
        let producer = exflow::sink::kafka::producer(kafka)?;
        exflow::sink::spool::Spool::open(&kafka.spool_dir, kafka.spool_max_bytes)?;
        if args.connect {
            let timeout = std::time::Duration::from_secs(10);
            anyhow::ensure!(
                exflow::sink::kafka::health_check(&producer, &kafka.topic, timeout),
                "sink.kafka: broker '{}' or topic '{}' is not reachable",
                kafka.brokers,
                kafka.topic
            );
            eprintln!(
                "exflow: kafka broker '{}' answers and has topic '{}'",
                kafka.brokers, kafka.topic
            );
        }
    } else if args.connect {
        eprintln!("exflow: no sink.kafka configured, nothing to connect to");
    }
    print!("{}", toml::to_string_pretty(&config)?);
    eprintln!("exflow: configuration is valid");
    Ok(())
}
