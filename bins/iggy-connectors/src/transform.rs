//! `iggy-connectors transform`: runs a connector file's transforms over sample
//! messages, shaped exactly as the runtime shapes them (`transforms::shape`, with the
//! streams' codecs), without Iggy or the plugin.
//!
//! Samples are JSON lines. For a sink, each is a message as its first stream holds it:
//! encoded with that stream's schema first (so an Avro or Protobuf stream checks the
//! sample against its schema), then decoded, transformed and encoded again, as the
//! plugin would get it. For a source, each is a message as the plugin produces it
//! (JSON), transformed and encoded for every stream. Avro and Protobuf results are
//! shown decoded, as JSON.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

use bytes::Bytes;
use config_provider::ConnectorConfig;
use connector_sdk::Schema;
use transforms::{Codec, Payload, StreamPayload, TransformChain};

/// Prints each result on stdout, each failure on stderr with its line number, and a
/// summary; exits 1 if any message failed or the files are unusable.
pub(crate) fn run(connector: &Path, input: &Path) -> ExitCode {
    match dry_run(connector, input) {
        Ok(tally) => {
            report!("{tally}");
            if tally.failed > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            report!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// What happened to the samples.
struct Tally {
    total: usize,
    kept: usize,
    dropped: usize,
    failed: usize,
    transforms: String,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} messages: {} out, {} filtered, {} failed (transforms: {})",
            self.total, self.kept, self.dropped, self.failed, self.transforms
        )
    }
}

/// Where samples come from and go to: the codec they are read with, and the named
/// codecs they are shaped for.
struct Sides {
    from: Codec,
    to: Vec<(String, Codec)>,
}

fn sides(config: &ConnectorConfig) -> Result<Sides, String> {
    let streams = match config {
        // A sink's message comes from one stream: the first shows how it is shaped.
        ConnectorConfig::Sink(sink) => codecs(
            sink.streams
                .iter()
                .take(1)
                .map(|stream| (&stream.stream, &stream.payload)),
        )?,
        ConnectorConfig::Source(source) => codecs(
            source
                .streams
                .iter()
                .map(|stream| (&stream.stream, &stream.payload)),
        )?,
    };
    let from = match (config, streams.first()) {
        (ConnectorConfig::Sink(_), Some((_, codec))) => codec.clone(),
        _ => Codec::plain(Schema::Json),
    };
    let to = if streams.is_empty() {
        vec![(String::new(), Codec::plain(Schema::Json))]
    } else {
        streams
    };
    Ok(Sides { from, to })
}

/// Each stream's name and codec; the first problem names its stream.
fn codecs<'a>(
    streams: impl Iterator<Item = (&'a String, &'a StreamPayload)>,
) -> Result<Vec<(String, Codec)>, String> {
    streams
        .map(|(name, payload)| {
            payload
                .codec()
                .map(|codec| (name.clone(), codec))
                .map_err(|error| format!("stream {name}: {error}"))
        })
        .collect()
}

fn dry_run(connector: &Path, input: &Path) -> Result<Tally, String> {
    let text = std::fs::read_to_string(connector)
        .map_err(|error| format!("cannot read {}: {error}", connector.display()))?;
    let config = config_provider::parse_connector_toml(&text)
        .map_err(|error| format!("{}: {error}", connector.display()))?;
    let chain = TransformChain::new(config.kind(), &config.common().transforms.0)
        .map_err(|error| format!("{}: {error}", connector.display()))?;
    let sides = sides(&config).map_err(|error| format!("{}: {error}", connector.display()))?;
    let codecs: Vec<Codec> = sides.to.iter().map(|(_, codec)| codec.clone()).collect();
    let reader: Box<dyn BufRead> = if input.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(input)
            .map_err(|error| format!("cannot read {}: {error}", input.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut stdout = std::io::stdout().lock();
    let mut tally = Tally {
        total: 0,
        kept: 0,
        dropped: 0,
        failed: 0,
        transforms: chain.names().join(" -> "),
    };
    for (index, line) in reader.lines().enumerate() {
        let line =
            line.map_err(|error| format!("{} line {}: {error}", input.display(), index + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        tally.total += 1;
        let number = index + 1;
        let sample = match as_written(&sides.from, line) {
            Ok(sample) => sample,
            Err(error) => {
                tally.failed += 1;
                report!("line {number}: cannot decode: {error}");
                continue;
            }
        };
        match transforms::shape(&chain, &sides.from, sample, &codecs) {
            Ok(None) => tally.dropped += 1,
            Ok(Some(shaped)) => {
                tally.kept += 1;
                let routed = shaped
                    .topic
                    .map(|topic| format!("\t(topic {topic})"))
                    .unwrap_or_default();
                let several = sides.to.len() > 1;
                for ((stream, codec), payload) in sides.to.iter().zip(shaped.payloads) {
                    let stream = if several {
                        format!("\t(stream {stream})")
                    } else {
                        String::new()
                    };
                    let shown = shown(codec, payload);
                    let _ = writeln!(stdout, "{shown}{routed}{stream}");
                }
            }
            Err(error) => {
                tally.failed += 1;
                report!("line {number}: {error}");
            }
        }
    }
    Ok(tally)
}

/// A JSON sample as `codec` writes it: the line itself for a text format, encoded for
/// Avro and Protobuf (which checks it against the schema).
fn as_written(codec: &Codec, line: String) -> Result<Bytes, String> {
    let bytes = Bytes::from(line.into_bytes());
    if matches!(codec.schema, Schema::Avro | Schema::Proto) {
        let payload = Payload::decode(Schema::Json, bytes).map_err(|error| error.to_string())?;
        let encoded = codec
            .encode(&payload)
            .map_err(|error| format!("as {:?}: {error}", codec.schema))?;
        return Ok(Bytes::from(encoded));
    }
    Ok(bytes)
}

/// A shaped payload for the terminal: Avro and Protobuf decoded to JSON.
fn shown(codec: &Codec, payload: Bytes) -> String {
    if matches!(codec.schema, Schema::Avro | Schema::Proto) {
        let json = codec
            .decode(payload.clone())
            .and_then(|decoded| decoded.encode(Schema::Json));
        if let Ok(json) = json {
            return String::from_utf8_lossy(&json).into_owned();
        }
    }
    String::from_utf8_lossy(&payload).into_owned()
}
