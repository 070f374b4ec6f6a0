//! `iggy-connectors transform`: runs a connector file's transforms over sample
//! messages, shaped exactly as the runtime shapes them (`transforms::shape`, with the
//! streams' codecs), without Iggy or the plugin.
//!
//! Samples are JSON lines. For a sink, each is a message as its first stream holds it:
//! encoded with that stream's schema first (so an Avro or Protobuf stream checks the
//! sample against its schema), then decoded, transformed and encoded again, as the
//! plugin would get it. For a source, each is a message as the plugin produces it
//! (JSON), transformed and encoded for every stream. Avro, Protobuf and FlatBuffers
//! results are shown decoded, as JSON. A binary stream that names no message schema
//! of its own is written and shown with the schema of the chain's convert transform
//! for that format (`proto_convert`, `avro_convert`, `flat_buffer_convert`).

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

fn sides(config: &ConnectorConfig, chain: &TransformChain) -> Result<Sides, String> {
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
    let to = match config {
        _ if streams.is_empty() => vec![(String::new(), Codec::plain(Schema::Json))],
        // What the plugin gets, as the runtime hands it over.
        ConnectorConfig::Sink(_) => streams
            .into_iter()
            .map(|(name, codec)| (name, transforms::sink_output(chain, &codec)))
            .collect(),
        ConnectorConfig::Source(_) => streams,
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
    let sides =
        sides(&config, &chain).map_err(|error| format!("{}: {error}", connector.display()))?;
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
        let sample = match as_written(&sample_codec(&sides.from, &chain), line) {
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
                    let shown = shown(&readable(codec, &chain), payload);
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

/// Whether `schema` is binary: samples are written in it, and results shown as JSON.
fn binary(schema: Schema) -> bool {
    matches!(schema, Schema::Avro | Schema::Proto | Schema::FlatBuffer)
}

/// Whether `codec` has its message schema (Avro, Protobuf, FlatBuffers).
fn named(codec: &Codec) -> bool {
    codec.avro.is_some() || codec.proto.is_some() || codec.flat_buffer.is_some()
}

/// `codec`, or for a binary stream that names no message schema of its own, the codec
/// of the chain's convert transform for that format (`proto_convert`, `avro_convert`,
/// `flat_buffer_convert`): how its samples are written and its results shown.
fn readable(codec: &Codec, chain: &TransformChain) -> Codec {
    if named(codec) || !binary(codec.schema) {
        return codec.clone();
    }
    chain
        .codec_for(codec.schema)
        .unwrap_or_else(|| codec.clone())
}

/// How a sink's JSON samples are written: as `readable` says, except that a `raw`
/// (or schemaless binary) stream read by a decoding convert transform holds messages
/// in that transform's format.
fn sample_codec(from: &Codec, chain: &TransformChain) -> Codec {
    if !named(from)
        && (from.schema == Schema::Raw || binary(from.schema))
        && let Some(codec) = chain.input_codec()
    {
        return codec;
    }
    readable(from, chain)
}

/// A JSON sample as `codec` writes it: the line itself for a text format, encoded for
/// Avro, Protobuf and FlatBuffers (which checks it against the schema).
fn as_written(codec: &Codec, line: String) -> Result<Bytes, String> {
    let bytes = Bytes::from(line.into_bytes());
    if binary(codec.schema) {
        let payload = Payload::decode(Schema::Json, bytes).map_err(|error| error.to_string())?;
        let encoded = codec
            .encode(&payload)
            .map_err(|error| format!("as {:?}: {error}", codec.schema))?;
        return Ok(Bytes::from(encoded));
    }
    Ok(bytes)
}

/// A shaped payload for the terminal: Avro, Protobuf and FlatBuffers decoded to JSON.
fn shown(codec: &Codec, payload: Bytes) -> String {
    if binary(codec.schema) {
        let json = codec
            .decode(payload.clone())
            .and_then(|decoded| decoded.encode(Schema::Json));
        if let Ok(json) = json {
            return String::from_utf8_lossy(&json).into_owned();
        }
    }
    String::from_utf8_lossy(&payload).into_owned()
}
