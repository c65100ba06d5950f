//! The gRPC codec: prost, except that a request that does not decode (e.g. a `string` field
//! holding bytes that are not UTF-8) is INVALID_ARGUMENT naming the field, not INTERNAL — it is
//! the caller's input that is wrong, and the gateway keeps serving.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// prost encoding with request decode errors reported as INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct GatewayCodec<T, U> {
    _messages: PhantomData<(T, U)>,
}

impl<T, U> Default for GatewayCodec<T, U> {
    fn default() -> Self {
        Self {
            _messages: PhantomData,
        }
    }
}

impl<T, U> Codec for GatewayCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = GatewayDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        GatewayDecoder(ProstDecoder::default())
    }
}

/// Decodes with prost; a malformed message is the caller's error.
#[derive(Debug)]
pub struct GatewayDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for GatewayDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // prost names the message and field: "failed to decode Protobuf message: KeyValueGetRequest.key:
        // invalid string value: data is not UTF-8 encoded".
        self.0
            .decode(buf)
            .map_err(|status| Status::invalid_argument(status.message().to_owned()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
