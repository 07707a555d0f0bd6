// wse-rs-client 0.1.0: built from clients/js/src by `npm run build`; do not edit.
// Bundles @msgpack/msgpack 3.1.3 (ISC, https://github.com/msgpack/msgpack-javascript).

// src/errors.js
var Code = Object.freeze({
  RP_TIMEOUT: "wse.client.rp.timeout",
  RP_DISCONNECT: "wse.client.rp.disconnect",
  NOT_READY: "wse.client.not-ready",
  ALREADY_CONNECTED: "wse.client.already-connected",
  WS_ERROR: "wse.client.ws-error",
  INVALID_CRA_HANDLER: "wse.client.invalid-cra-handler",
  NOT_AUTHORIZED: "wse.not-authorized",
  RP_FAILED: "wse.server.rp.failed",
  RP_NOT_REGISTERED: "wse.server.rp.not-registered",
  RP_ALREADY_REGISTERED: "wse.server.rp.already-registered",
  PROTOCOL_VIOLATION: "wse.server.protocol-violation"
});
var WseError = class _WseError extends Error {
  /**
   * @param {string} code
   * @param {unknown} [details]
   * @param {string} [message]
   */
  constructor(code, details = void 0, message = void 0) {
    super(message ?? code);
    this.name = "WseError";
    this.code = code;
    this.details = details;
  }
  /** The protocol's error object for this error. */
  toWire() {
    const wire = { code: this.code };
    if (this.message !== this.code) wire.message = this.message;
    if (this.details !== void 0) wire.details = this.details;
    return wire;
  }
  /** The error a `~wse:response-err` payload stands for. */
  static fromWire(payload) {
    if (payload !== null && typeof payload === "object" && typeof payload.code === "string") {
      const message = typeof payload.message === "string" ? payload.message : void 0;
      return new _WseError(payload.code, payload.details ?? void 0, message);
    }
    return new _WseError(Code.RP_FAILED, payload);
  }
};

// node_modules/@msgpack/msgpack/dist.esm/utils/utf8.mjs
function utf8Count(str) {
  const strLength = str.length;
  let byteLength = 0;
  let pos = 0;
  while (pos < strLength) {
    let value = str.charCodeAt(pos++);
    if ((value & 4294967168) === 0) {
      byteLength++;
      continue;
    } else if ((value & 4294965248) === 0) {
      byteLength += 2;
    } else {
      if (value >= 55296 && value <= 56319) {
        if (pos < strLength) {
          const extra = str.charCodeAt(pos);
          if ((extra & 64512) === 56320) {
            ++pos;
            value = ((value & 1023) << 10) + (extra & 1023) + 65536;
          }
        }
      }
      if ((value & 4294901760) === 0) {
        byteLength += 3;
      } else {
        byteLength += 4;
      }
    }
  }
  return byteLength;
}
function utf8EncodeJs(str, output, outputOffset) {
  const strLength = str.length;
  let offset = outputOffset;
  let pos = 0;
  while (pos < strLength) {
    let value = str.charCodeAt(pos++);
    if ((value & 4294967168) === 0) {
      output[offset++] = value;
      continue;
    } else if ((value & 4294965248) === 0) {
      output[offset++] = value >> 6 & 31 | 192;
    } else {
      if (value >= 55296 && value <= 56319) {
        if (pos < strLength) {
          const extra = str.charCodeAt(pos);
          if ((extra & 64512) === 56320) {
            ++pos;
            value = ((value & 1023) << 10) + (extra & 1023) + 65536;
          }
        }
      }
      if ((value & 4294901760) === 0) {
        output[offset++] = value >> 12 & 15 | 224;
        output[offset++] = value >> 6 & 63 | 128;
      } else {
        output[offset++] = value >> 18 & 7 | 240;
        output[offset++] = value >> 12 & 63 | 128;
        output[offset++] = value >> 6 & 63 | 128;
      }
    }
    output[offset++] = value & 63 | 128;
  }
}
var sharedTextEncoder = new TextEncoder();
var TEXT_ENCODER_THRESHOLD = 50;
function utf8EncodeTE(str, output, outputOffset) {
  sharedTextEncoder.encodeInto(str, output.subarray(outputOffset));
}
function utf8Encode(str, output, outputOffset) {
  if (str.length > TEXT_ENCODER_THRESHOLD) {
    utf8EncodeTE(str, output, outputOffset);
  } else {
    utf8EncodeJs(str, output, outputOffset);
  }
}
var CHUNK_SIZE = 4096;
function utf8DecodeJs(bytes, inputOffset, byteLength) {
  let offset = inputOffset;
  const end = offset + byteLength;
  const units = [];
  let result = "";
  while (offset < end) {
    const byte1 = bytes[offset++];
    if ((byte1 & 128) === 0) {
      units.push(byte1);
    } else if ((byte1 & 224) === 192) {
      const byte2 = bytes[offset++] & 63;
      units.push((byte1 & 31) << 6 | byte2);
    } else if ((byte1 & 240) === 224) {
      const byte2 = bytes[offset++] & 63;
      const byte3 = bytes[offset++] & 63;
      units.push((byte1 & 31) << 12 | byte2 << 6 | byte3);
    } else if ((byte1 & 248) === 240) {
      const byte2 = bytes[offset++] & 63;
      const byte3 = bytes[offset++] & 63;
      const byte4 = bytes[offset++] & 63;
      let unit = (byte1 & 7) << 18 | byte2 << 12 | byte3 << 6 | byte4;
      if (unit > 65535) {
        unit -= 65536;
        units.push(unit >>> 10 & 1023 | 55296);
        unit = 56320 | unit & 1023;
      }
      units.push(unit);
    } else {
      units.push(byte1);
    }
    if (units.length >= CHUNK_SIZE) {
      result += String.fromCharCode(...units);
      units.length = 0;
    }
  }
  if (units.length > 0) {
    result += String.fromCharCode(...units);
  }
  return result;
}
var sharedTextDecoder = new TextDecoder();
var TEXT_DECODER_THRESHOLD = 200;
function utf8DecodeTD(bytes, inputOffset, byteLength) {
  const stringBytes = bytes.subarray(inputOffset, inputOffset + byteLength);
  return sharedTextDecoder.decode(stringBytes);
}
function utf8Decode(bytes, inputOffset, byteLength) {
  if (byteLength > TEXT_DECODER_THRESHOLD) {
    return utf8DecodeTD(bytes, inputOffset, byteLength);
  } else {
    return utf8DecodeJs(bytes, inputOffset, byteLength);
  }
}

// node_modules/@msgpack/msgpack/dist.esm/ExtData.mjs
var ExtData = class {
  type;
  data;
  constructor(type, data) {
    this.type = type;
    this.data = data;
  }
};

// node_modules/@msgpack/msgpack/dist.esm/DecodeError.mjs
var DecodeError = class _DecodeError extends Error {
  constructor(message) {
    super(message);
    const proto = Object.create(_DecodeError.prototype);
    Object.setPrototypeOf(this, proto);
    Object.defineProperty(this, "name", {
      configurable: true,
      enumerable: false,
      value: _DecodeError.name
    });
  }
};

// node_modules/@msgpack/msgpack/dist.esm/utils/int.mjs
var UINT32_MAX = 4294967295;
function setUint64(view, offset, value) {
  const high = value / 4294967296;
  const low = value;
  view.setUint32(offset, high);
  view.setUint32(offset + 4, low);
}
function setInt64(view, offset, value) {
  const high = Math.floor(value / 4294967296);
  const low = value;
  view.setUint32(offset, high);
  view.setUint32(offset + 4, low);
}
function getInt64(view, offset) {
  const high = view.getInt32(offset);
  const low = view.getUint32(offset + 4);
  return high * 4294967296 + low;
}
function getUint64(view, offset) {
  const high = view.getUint32(offset);
  const low = view.getUint32(offset + 4);
  return high * 4294967296 + low;
}

// node_modules/@msgpack/msgpack/dist.esm/timestamp.mjs
var EXT_TIMESTAMP = -1;
var TIMESTAMP32_MAX_SEC = 4294967296 - 1;
var TIMESTAMP64_MAX_SEC = 17179869184 - 1;
function encodeTimeSpecToTimestamp({ sec, nsec }) {
  if (sec >= 0 && nsec >= 0 && sec <= TIMESTAMP64_MAX_SEC) {
    if (nsec === 0 && sec <= TIMESTAMP32_MAX_SEC) {
      const rv = new Uint8Array(4);
      const view = new DataView(rv.buffer);
      view.setUint32(0, sec);
      return rv;
    } else {
      const secHigh = sec / 4294967296;
      const secLow = sec & 4294967295;
      const rv = new Uint8Array(8);
      const view = new DataView(rv.buffer);
      view.setUint32(0, nsec << 2 | secHigh & 3);
      view.setUint32(4, secLow);
      return rv;
    }
  } else {
    const rv = new Uint8Array(12);
    const view = new DataView(rv.buffer);
    view.setUint32(0, nsec);
    setInt64(view, 4, sec);
    return rv;
  }
}
function encodeDateToTimeSpec(date) {
  const msec = date.getTime();
  const sec = Math.floor(msec / 1e3);
  const nsec = (msec - sec * 1e3) * 1e6;
  const nsecInSec = Math.floor(nsec / 1e9);
  return {
    sec: sec + nsecInSec,
    nsec: nsec - nsecInSec * 1e9
  };
}
function encodeTimestampExtension(object) {
  if (object instanceof Date) {
    const timeSpec = encodeDateToTimeSpec(object);
    return encodeTimeSpecToTimestamp(timeSpec);
  } else {
    return null;
  }
}
function decodeTimestampToTimeSpec(data) {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  switch (data.byteLength) {
    case 4: {
      const sec = view.getUint32(0);
      const nsec = 0;
      return { sec, nsec };
    }
    case 8: {
      const nsec30AndSecHigh2 = view.getUint32(0);
      const secLow32 = view.getUint32(4);
      const sec = (nsec30AndSecHigh2 & 3) * 4294967296 + secLow32;
      const nsec = nsec30AndSecHigh2 >>> 2;
      return { sec, nsec };
    }
    case 12: {
      const sec = getInt64(view, 4);
      const nsec = view.getUint32(0);
      return { sec, nsec };
    }
    default:
      throw new DecodeError(`Unrecognized data size for timestamp (expected 4, 8, or 12): ${data.length}`);
  }
}
function decodeTimestampExtension(data) {
  const timeSpec = decodeTimestampToTimeSpec(data);
  return new Date(timeSpec.sec * 1e3 + timeSpec.nsec / 1e6);
}
var timestampExtension = {
  type: EXT_TIMESTAMP,
  encode: encodeTimestampExtension,
  decode: decodeTimestampExtension
};

// node_modules/@msgpack/msgpack/dist.esm/ExtensionCodec.mjs
var ExtensionCodec = class _ExtensionCodec {
  static defaultCodec = new _ExtensionCodec();
  // ensures ExtensionCodecType<X> matches ExtensionCodec<X>
  // this will make type errors a lot more clear
  // eslint-disable-next-line @typescript-eslint/naming-convention
  __brand;
  // built-in extensions
  builtInEncoders = [];
  builtInDecoders = [];
  // custom extensions
  encoders = [];
  decoders = [];
  constructor() {
    this.register(timestampExtension);
  }
  register({ type, encode: encode2, decode: decode2 }) {
    if (type >= 0) {
      this.encoders[type] = encode2;
      this.decoders[type] = decode2;
    } else {
      const index = -1 - type;
      this.builtInEncoders[index] = encode2;
      this.builtInDecoders[index] = decode2;
    }
  }
  tryToEncode(object, context) {
    for (let i = 0; i < this.builtInEncoders.length; i++) {
      const encodeExt = this.builtInEncoders[i];
      if (encodeExt != null) {
        const data = encodeExt(object, context);
        if (data != null) {
          const type = -1 - i;
          return new ExtData(type, data);
        }
      }
    }
    for (let i = 0; i < this.encoders.length; i++) {
      const encodeExt = this.encoders[i];
      if (encodeExt != null) {
        const data = encodeExt(object, context);
        if (data != null) {
          const type = i;
          return new ExtData(type, data);
        }
      }
    }
    if (object instanceof ExtData) {
      return object;
    }
    return null;
  }
  decode(data, type, context) {
    const decodeExt = type < 0 ? this.builtInDecoders[-1 - type] : this.decoders[type];
    if (decodeExt) {
      return decodeExt(data, type, context);
    } else {
      return new ExtData(type, data);
    }
  }
};

// node_modules/@msgpack/msgpack/dist.esm/utils/typedArrays.mjs
function isArrayBufferLike(buffer) {
  return buffer instanceof ArrayBuffer || typeof SharedArrayBuffer !== "undefined" && buffer instanceof SharedArrayBuffer;
}
function ensureUint8Array(buffer) {
  if (buffer instanceof Uint8Array) {
    return buffer;
  } else if (ArrayBuffer.isView(buffer)) {
    return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  } else if (isArrayBufferLike(buffer)) {
    return new Uint8Array(buffer);
  } else {
    return Uint8Array.from(buffer);
  }
}

// node_modules/@msgpack/msgpack/dist.esm/Encoder.mjs
var DEFAULT_MAX_DEPTH = 100;
var DEFAULT_INITIAL_BUFFER_SIZE = 2048;
var Encoder = class _Encoder {
  extensionCodec;
  context;
  useBigInt64;
  maxDepth;
  initialBufferSize;
  sortKeys;
  forceFloat32;
  ignoreUndefined;
  forceIntegerToFloat;
  pos;
  view;
  bytes;
  entered = false;
  constructor(options) {
    this.extensionCodec = options?.extensionCodec ?? ExtensionCodec.defaultCodec;
    this.context = options?.context;
    this.useBigInt64 = options?.useBigInt64 ?? false;
    this.maxDepth = options?.maxDepth ?? DEFAULT_MAX_DEPTH;
    this.initialBufferSize = options?.initialBufferSize ?? DEFAULT_INITIAL_BUFFER_SIZE;
    this.sortKeys = options?.sortKeys ?? false;
    this.forceFloat32 = options?.forceFloat32 ?? false;
    this.ignoreUndefined = options?.ignoreUndefined ?? false;
    this.forceIntegerToFloat = options?.forceIntegerToFloat ?? false;
    this.pos = 0;
    this.view = new DataView(new ArrayBuffer(this.initialBufferSize));
    this.bytes = new Uint8Array(this.view.buffer);
  }
  clone() {
    return new _Encoder({
      extensionCodec: this.extensionCodec,
      context: this.context,
      useBigInt64: this.useBigInt64,
      maxDepth: this.maxDepth,
      initialBufferSize: this.initialBufferSize,
      sortKeys: this.sortKeys,
      forceFloat32: this.forceFloat32,
      ignoreUndefined: this.ignoreUndefined,
      forceIntegerToFloat: this.forceIntegerToFloat
    });
  }
  reinitializeState() {
    this.pos = 0;
  }
  /**
   * This is almost equivalent to {@link Encoder#encode}, but it returns an reference of the encoder's internal buffer and thus much faster than {@link Encoder#encode}.
   *
   * @returns Encodes the object and returns a shared reference the encoder's internal buffer.
   */
  encodeSharedRef(object) {
    if (this.entered) {
      const instance = this.clone();
      return instance.encodeSharedRef(object);
    }
    try {
      this.entered = true;
      this.reinitializeState();
      this.doEncode(object, 1);
      return this.bytes.subarray(0, this.pos);
    } finally {
      this.entered = false;
    }
  }
  /**
   * @returns Encodes the object and returns a copy of the encoder's internal buffer.
   */
  encode(object) {
    if (this.entered) {
      const instance = this.clone();
      return instance.encode(object);
    }
    try {
      this.entered = true;
      this.reinitializeState();
      this.doEncode(object, 1);
      return this.bytes.slice(0, this.pos);
    } finally {
      this.entered = false;
    }
  }
  doEncode(object, depth) {
    if (depth > this.maxDepth) {
      throw new Error(`Too deep objects in depth ${depth}`);
    }
    if (object == null) {
      this.encodeNil();
    } else if (typeof object === "boolean") {
      this.encodeBoolean(object);
    } else if (typeof object === "number") {
      if (!this.forceIntegerToFloat) {
        this.encodeNumber(object);
      } else {
        this.encodeNumberAsFloat(object);
      }
    } else if (typeof object === "string") {
      this.encodeString(object);
    } else if (this.useBigInt64 && typeof object === "bigint") {
      this.encodeBigInt64(object);
    } else {
      this.encodeObject(object, depth);
    }
  }
  ensureBufferSizeToWrite(sizeToWrite) {
    const requiredSize = this.pos + sizeToWrite;
    if (this.view.byteLength < requiredSize) {
      this.resizeBuffer(requiredSize * 2);
    }
  }
  resizeBuffer(newSize) {
    const newBuffer = new ArrayBuffer(newSize);
    const newBytes = new Uint8Array(newBuffer);
    const newView = new DataView(newBuffer);
    newBytes.set(this.bytes);
    this.view = newView;
    this.bytes = newBytes;
  }
  encodeNil() {
    this.writeU8(192);
  }
  encodeBoolean(object) {
    if (object === false) {
      this.writeU8(194);
    } else {
      this.writeU8(195);
    }
  }
  encodeNumber(object) {
    if (!this.forceIntegerToFloat && Number.isSafeInteger(object)) {
      if (object >= 0) {
        if (object < 128) {
          this.writeU8(object);
        } else if (object < 256) {
          this.writeU8(204);
          this.writeU8(object);
        } else if (object < 65536) {
          this.writeU8(205);
          this.writeU16(object);
        } else if (object < 4294967296) {
          this.writeU8(206);
          this.writeU32(object);
        } else if (!this.useBigInt64) {
          this.writeU8(207);
          this.writeU64(object);
        } else {
          this.encodeNumberAsFloat(object);
        }
      } else {
        if (object >= -32) {
          this.writeU8(224 | object + 32);
        } else if (object >= -128) {
          this.writeU8(208);
          this.writeI8(object);
        } else if (object >= -32768) {
          this.writeU8(209);
          this.writeI16(object);
        } else if (object >= -2147483648) {
          this.writeU8(210);
          this.writeI32(object);
        } else if (!this.useBigInt64) {
          this.writeU8(211);
          this.writeI64(object);
        } else {
          this.encodeNumberAsFloat(object);
        }
      }
    } else {
      this.encodeNumberAsFloat(object);
    }
  }
  encodeNumberAsFloat(object) {
    if (this.forceFloat32) {
      this.writeU8(202);
      this.writeF32(object);
    } else {
      this.writeU8(203);
      this.writeF64(object);
    }
  }
  encodeBigInt64(object) {
    if (object >= BigInt(0)) {
      this.writeU8(207);
      this.writeBigUint64(object);
    } else {
      this.writeU8(211);
      this.writeBigInt64(object);
    }
  }
  writeStringHeader(byteLength) {
    if (byteLength < 32) {
      this.writeU8(160 + byteLength);
    } else if (byteLength < 256) {
      this.writeU8(217);
      this.writeU8(byteLength);
    } else if (byteLength < 65536) {
      this.writeU8(218);
      this.writeU16(byteLength);
    } else if (byteLength < 4294967296) {
      this.writeU8(219);
      this.writeU32(byteLength);
    } else {
      throw new Error(`Too long string: ${byteLength} bytes in UTF-8`);
    }
  }
  encodeString(object) {
    const maxHeaderSize = 1 + 4;
    const byteLength = utf8Count(object);
    this.ensureBufferSizeToWrite(maxHeaderSize + byteLength);
    this.writeStringHeader(byteLength);
    utf8Encode(object, this.bytes, this.pos);
    this.pos += byteLength;
  }
  encodeObject(object, depth) {
    const ext = this.extensionCodec.tryToEncode(object, this.context);
    if (ext != null) {
      this.encodeExtension(ext);
    } else if (Array.isArray(object)) {
      this.encodeArray(object, depth);
    } else if (ArrayBuffer.isView(object)) {
      this.encodeBinary(object);
    } else if (typeof object === "object") {
      this.encodeMap(object, depth);
    } else {
      throw new Error(`Unrecognized object: ${Object.prototype.toString.apply(object)}`);
    }
  }
  encodeBinary(object) {
    const size = object.byteLength;
    if (size < 256) {
      this.writeU8(196);
      this.writeU8(size);
    } else if (size < 65536) {
      this.writeU8(197);
      this.writeU16(size);
    } else if (size < 4294967296) {
      this.writeU8(198);
      this.writeU32(size);
    } else {
      throw new Error(`Too large binary: ${size}`);
    }
    const bytes = ensureUint8Array(object);
    this.writeU8a(bytes);
  }
  encodeArray(object, depth) {
    const size = object.length;
    if (size < 16) {
      this.writeU8(144 + size);
    } else if (size < 65536) {
      this.writeU8(220);
      this.writeU16(size);
    } else if (size < 4294967296) {
      this.writeU8(221);
      this.writeU32(size);
    } else {
      throw new Error(`Too large array: ${size}`);
    }
    for (const item of object) {
      this.doEncode(item, depth + 1);
    }
  }
  countWithoutUndefined(object, keys) {
    let count = 0;
    for (const key of keys) {
      if (object[key] !== void 0) {
        count++;
      }
    }
    return count;
  }
  encodeMap(object, depth) {
    const keys = Object.keys(object);
    if (this.sortKeys) {
      keys.sort();
    }
    const size = this.ignoreUndefined ? this.countWithoutUndefined(object, keys) : keys.length;
    if (size < 16) {
      this.writeU8(128 + size);
    } else if (size < 65536) {
      this.writeU8(222);
      this.writeU16(size);
    } else if (size < 4294967296) {
      this.writeU8(223);
      this.writeU32(size);
    } else {
      throw new Error(`Too large map object: ${size}`);
    }
    for (const key of keys) {
      const value = object[key];
      if (!(this.ignoreUndefined && value === void 0)) {
        this.encodeString(key);
        this.doEncode(value, depth + 1);
      }
    }
  }
  encodeExtension(ext) {
    if (typeof ext.data === "function") {
      const data = ext.data(this.pos + 6);
      const size2 = data.length;
      if (size2 >= 4294967296) {
        throw new Error(`Too large extension object: ${size2}`);
      }
      this.writeU8(201);
      this.writeU32(size2);
      this.writeI8(ext.type);
      this.writeU8a(data);
      return;
    }
    const size = ext.data.length;
    if (size === 1) {
      this.writeU8(212);
    } else if (size === 2) {
      this.writeU8(213);
    } else if (size === 4) {
      this.writeU8(214);
    } else if (size === 8) {
      this.writeU8(215);
    } else if (size === 16) {
      this.writeU8(216);
    } else if (size < 256) {
      this.writeU8(199);
      this.writeU8(size);
    } else if (size < 65536) {
      this.writeU8(200);
      this.writeU16(size);
    } else if (size < 4294967296) {
      this.writeU8(201);
      this.writeU32(size);
    } else {
      throw new Error(`Too large extension object: ${size}`);
    }
    this.writeI8(ext.type);
    this.writeU8a(ext.data);
  }
  writeU8(value) {
    this.ensureBufferSizeToWrite(1);
    this.view.setUint8(this.pos, value);
    this.pos++;
  }
  writeU8a(values) {
    const size = values.length;
    this.ensureBufferSizeToWrite(size);
    this.bytes.set(values, this.pos);
    this.pos += size;
  }
  writeI8(value) {
    this.ensureBufferSizeToWrite(1);
    this.view.setInt8(this.pos, value);
    this.pos++;
  }
  writeU16(value) {
    this.ensureBufferSizeToWrite(2);
    this.view.setUint16(this.pos, value);
    this.pos += 2;
  }
  writeI16(value) {
    this.ensureBufferSizeToWrite(2);
    this.view.setInt16(this.pos, value);
    this.pos += 2;
  }
  writeU32(value) {
    this.ensureBufferSizeToWrite(4);
    this.view.setUint32(this.pos, value);
    this.pos += 4;
  }
  writeI32(value) {
    this.ensureBufferSizeToWrite(4);
    this.view.setInt32(this.pos, value);
    this.pos += 4;
  }
  writeF32(value) {
    this.ensureBufferSizeToWrite(4);
    this.view.setFloat32(this.pos, value);
    this.pos += 4;
  }
  writeF64(value) {
    this.ensureBufferSizeToWrite(8);
    this.view.setFloat64(this.pos, value);
    this.pos += 8;
  }
  writeU64(value) {
    this.ensureBufferSizeToWrite(8);
    setUint64(this.view, this.pos, value);
    this.pos += 8;
  }
  writeI64(value) {
    this.ensureBufferSizeToWrite(8);
    setInt64(this.view, this.pos, value);
    this.pos += 8;
  }
  writeBigUint64(value) {
    this.ensureBufferSizeToWrite(8);
    this.view.setBigUint64(this.pos, value);
    this.pos += 8;
  }
  writeBigInt64(value) {
    this.ensureBufferSizeToWrite(8);
    this.view.setBigInt64(this.pos, value);
    this.pos += 8;
  }
};

// node_modules/@msgpack/msgpack/dist.esm/encode.mjs
function encode(value, options) {
  const encoder = new Encoder(options);
  return encoder.encodeSharedRef(value);
}

// node_modules/@msgpack/msgpack/dist.esm/utils/prettyByte.mjs
function prettyByte(byte) {
  return `${byte < 0 ? "-" : ""}0x${Math.abs(byte).toString(16).padStart(2, "0")}`;
}

// node_modules/@msgpack/msgpack/dist.esm/CachedKeyDecoder.mjs
var DEFAULT_MAX_KEY_LENGTH = 16;
var DEFAULT_MAX_LENGTH_PER_KEY = 16;
var CachedKeyDecoder = class {
  hit = 0;
  miss = 0;
  caches;
  maxKeyLength;
  maxLengthPerKey;
  constructor(maxKeyLength = DEFAULT_MAX_KEY_LENGTH, maxLengthPerKey = DEFAULT_MAX_LENGTH_PER_KEY) {
    this.maxKeyLength = maxKeyLength;
    this.maxLengthPerKey = maxLengthPerKey;
    this.caches = [];
    for (let i = 0; i < this.maxKeyLength; i++) {
      this.caches.push([]);
    }
  }
  canBeCached(byteLength) {
    return byteLength > 0 && byteLength <= this.maxKeyLength;
  }
  find(bytes, inputOffset, byteLength) {
    const records = this.caches[byteLength - 1];
    FIND_CHUNK: for (const record of records) {
      const recordBytes = record.bytes;
      for (let j = 0; j < byteLength; j++) {
        if (recordBytes[j] !== bytes[inputOffset + j]) {
          continue FIND_CHUNK;
        }
      }
      return record.str;
    }
    return null;
  }
  store(bytes, value) {
    const records = this.caches[bytes.length - 1];
    const record = { bytes, str: value };
    if (records.length >= this.maxLengthPerKey) {
      records[Math.random() * records.length | 0] = record;
    } else {
      records.push(record);
    }
  }
  decode(bytes, inputOffset, byteLength) {
    const cachedValue = this.find(bytes, inputOffset, byteLength);
    if (cachedValue != null) {
      this.hit++;
      return cachedValue;
    }
    this.miss++;
    const str = utf8DecodeJs(bytes, inputOffset, byteLength);
    const slicedCopyOfBytes = Uint8Array.prototype.slice.call(bytes, inputOffset, inputOffset + byteLength);
    this.store(slicedCopyOfBytes, str);
    return str;
  }
};

// node_modules/@msgpack/msgpack/dist.esm/Decoder.mjs
var STATE_ARRAY = "array";
var STATE_MAP_KEY = "map_key";
var STATE_MAP_VALUE = "map_value";
var mapKeyConverter = (key) => {
  if (typeof key === "string" || typeof key === "number") {
    return key;
  }
  throw new DecodeError("The type of key must be string or number but " + typeof key);
};
var StackPool = class {
  stack = [];
  stackHeadPosition = -1;
  get length() {
    return this.stackHeadPosition + 1;
  }
  top() {
    return this.stack[this.stackHeadPosition];
  }
  pushArrayState(size) {
    const state = this.getUninitializedStateFromPool();
    state.type = STATE_ARRAY;
    state.position = 0;
    state.size = size;
    state.array = new Array(size);
  }
  pushMapState(size) {
    const state = this.getUninitializedStateFromPool();
    state.type = STATE_MAP_KEY;
    state.readCount = 0;
    state.size = size;
    state.map = {};
  }
  getUninitializedStateFromPool() {
    this.stackHeadPosition++;
    if (this.stackHeadPosition === this.stack.length) {
      const partialState = {
        type: void 0,
        size: 0,
        array: void 0,
        position: 0,
        readCount: 0,
        map: void 0,
        key: null
      };
      this.stack.push(partialState);
    }
    return this.stack[this.stackHeadPosition];
  }
  release(state) {
    const topStackState = this.stack[this.stackHeadPosition];
    if (topStackState !== state) {
      throw new Error("Invalid stack state. Released state is not on top of the stack.");
    }
    if (state.type === STATE_ARRAY) {
      const partialState = state;
      partialState.size = 0;
      partialState.array = void 0;
      partialState.position = 0;
      partialState.type = void 0;
    }
    if (state.type === STATE_MAP_KEY || state.type === STATE_MAP_VALUE) {
      const partialState = state;
      partialState.size = 0;
      partialState.map = void 0;
      partialState.readCount = 0;
      partialState.type = void 0;
    }
    this.stackHeadPosition--;
  }
  reset() {
    this.stack.length = 0;
    this.stackHeadPosition = -1;
  }
};
var HEAD_BYTE_REQUIRED = -1;
var EMPTY_VIEW = new DataView(new ArrayBuffer(0));
var EMPTY_BYTES = new Uint8Array(EMPTY_VIEW.buffer);
try {
  EMPTY_VIEW.getInt8(0);
} catch (e) {
  if (!(e instanceof RangeError)) {
    throw new Error("This module is not supported in the current JavaScript engine because DataView does not throw RangeError on out-of-bounds access");
  }
}
var MORE_DATA = new RangeError("Insufficient data");
var sharedCachedKeyDecoder = new CachedKeyDecoder();
var Decoder = class _Decoder {
  extensionCodec;
  context;
  useBigInt64;
  rawStrings;
  maxStrLength;
  maxBinLength;
  maxArrayLength;
  maxMapLength;
  maxExtLength;
  keyDecoder;
  mapKeyConverter;
  totalPos = 0;
  pos = 0;
  view = EMPTY_VIEW;
  bytes = EMPTY_BYTES;
  headByte = HEAD_BYTE_REQUIRED;
  stack = new StackPool();
  entered = false;
  constructor(options) {
    this.extensionCodec = options?.extensionCodec ?? ExtensionCodec.defaultCodec;
    this.context = options?.context;
    this.useBigInt64 = options?.useBigInt64 ?? false;
    this.rawStrings = options?.rawStrings ?? false;
    this.maxStrLength = options?.maxStrLength ?? UINT32_MAX;
    this.maxBinLength = options?.maxBinLength ?? UINT32_MAX;
    this.maxArrayLength = options?.maxArrayLength ?? UINT32_MAX;
    this.maxMapLength = options?.maxMapLength ?? UINT32_MAX;
    this.maxExtLength = options?.maxExtLength ?? UINT32_MAX;
    this.keyDecoder = options?.keyDecoder !== void 0 ? options.keyDecoder : sharedCachedKeyDecoder;
    this.mapKeyConverter = options?.mapKeyConverter ?? mapKeyConverter;
  }
  clone() {
    return new _Decoder({
      extensionCodec: this.extensionCodec,
      context: this.context,
      useBigInt64: this.useBigInt64,
      rawStrings: this.rawStrings,
      maxStrLength: this.maxStrLength,
      maxBinLength: this.maxBinLength,
      maxArrayLength: this.maxArrayLength,
      maxMapLength: this.maxMapLength,
      maxExtLength: this.maxExtLength,
      keyDecoder: this.keyDecoder
    });
  }
  reinitializeState() {
    this.totalPos = 0;
    this.headByte = HEAD_BYTE_REQUIRED;
    this.stack.reset();
  }
  setBuffer(buffer) {
    const bytes = ensureUint8Array(buffer);
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }
  appendBuffer(buffer) {
    if (this.headByte === HEAD_BYTE_REQUIRED && !this.hasRemaining(1)) {
      this.setBuffer(buffer);
    } else {
      const remainingData = this.bytes.subarray(this.pos);
      const newData = ensureUint8Array(buffer);
      const newBuffer = new Uint8Array(remainingData.length + newData.length);
      newBuffer.set(remainingData);
      newBuffer.set(newData, remainingData.length);
      this.setBuffer(newBuffer);
    }
  }
  hasRemaining(size) {
    return this.view.byteLength - this.pos >= size;
  }
  createExtraByteError(posToShow) {
    const { view, pos } = this;
    return new RangeError(`Extra ${view.byteLength - pos} of ${view.byteLength} byte(s) found at buffer[${posToShow}]`);
  }
  /**
   * @throws {@link DecodeError}
   * @throws {@link RangeError}
   */
  decode(buffer) {
    if (this.entered) {
      const instance = this.clone();
      return instance.decode(buffer);
    }
    try {
      this.entered = true;
      this.reinitializeState();
      this.setBuffer(buffer);
      const object = this.doDecodeSync();
      if (this.hasRemaining(1)) {
        throw this.createExtraByteError(this.pos);
      }
      return object;
    } finally {
      this.entered = false;
    }
  }
  *decodeMulti(buffer) {
    if (this.entered) {
      const instance = this.clone();
      yield* instance.decodeMulti(buffer);
      return;
    }
    try {
      this.entered = true;
      this.reinitializeState();
      this.setBuffer(buffer);
      while (this.hasRemaining(1)) {
        yield this.doDecodeSync();
      }
    } finally {
      this.entered = false;
    }
  }
  async decodeAsync(stream) {
    if (this.entered) {
      const instance = this.clone();
      return instance.decodeAsync(stream);
    }
    try {
      this.entered = true;
      let decoded = false;
      let object;
      for await (const buffer of stream) {
        if (decoded) {
          this.entered = false;
          throw this.createExtraByteError(this.totalPos);
        }
        this.appendBuffer(buffer);
        try {
          object = this.doDecodeSync();
          decoded = true;
        } catch (e) {
          if (!(e instanceof RangeError)) {
            throw e;
          }
        }
        this.totalPos += this.pos;
      }
      if (decoded) {
        if (this.hasRemaining(1)) {
          throw this.createExtraByteError(this.totalPos);
        }
        return object;
      }
      const { headByte, pos, totalPos } = this;
      throw new RangeError(`Insufficient data in parsing ${prettyByte(headByte)} at ${totalPos} (${pos} in the current buffer)`);
    } finally {
      this.entered = false;
    }
  }
  decodeArrayStream(stream) {
    return this.decodeMultiAsync(stream, true);
  }
  decodeStream(stream) {
    return this.decodeMultiAsync(stream, false);
  }
  async *decodeMultiAsync(stream, isArray) {
    if (this.entered) {
      const instance = this.clone();
      yield* instance.decodeMultiAsync(stream, isArray);
      return;
    }
    try {
      this.entered = true;
      let isArrayHeaderRequired = isArray;
      let arrayItemsLeft = -1;
      for await (const buffer of stream) {
        if (isArray && arrayItemsLeft === 0) {
          throw this.createExtraByteError(this.totalPos);
        }
        this.appendBuffer(buffer);
        if (isArrayHeaderRequired) {
          arrayItemsLeft = this.readArraySize();
          isArrayHeaderRequired = false;
          this.complete();
        }
        try {
          while (true) {
            yield this.doDecodeSync();
            if (--arrayItemsLeft === 0) {
              break;
            }
          }
        } catch (e) {
          if (!(e instanceof RangeError)) {
            throw e;
          }
        }
        this.totalPos += this.pos;
      }
    } finally {
      this.entered = false;
    }
  }
  doDecodeSync() {
    DECODE: while (true) {
      const headByte = this.readHeadByte();
      let object;
      if (headByte >= 224) {
        object = headByte - 256;
      } else if (headByte < 192) {
        if (headByte < 128) {
          object = headByte;
        } else if (headByte < 144) {
          const size = headByte - 128;
          if (size !== 0) {
            this.pushMapState(size);
            this.complete();
            continue DECODE;
          } else {
            object = {};
          }
        } else if (headByte < 160) {
          const size = headByte - 144;
          if (size !== 0) {
            this.pushArrayState(size);
            this.complete();
            continue DECODE;
          } else {
            object = [];
          }
        } else {
          const byteLength = headByte - 160;
          object = this.decodeString(byteLength, 0);
        }
      } else if (headByte === 192) {
        object = null;
      } else if (headByte === 194) {
        object = false;
      } else if (headByte === 195) {
        object = true;
      } else if (headByte === 202) {
        object = this.readF32();
      } else if (headByte === 203) {
        object = this.readF64();
      } else if (headByte === 204) {
        object = this.readU8();
      } else if (headByte === 205) {
        object = this.readU16();
      } else if (headByte === 206) {
        object = this.readU32();
      } else if (headByte === 207) {
        if (this.useBigInt64) {
          object = this.readU64AsBigInt();
        } else {
          object = this.readU64();
        }
      } else if (headByte === 208) {
        object = this.readI8();
      } else if (headByte === 209) {
        object = this.readI16();
      } else if (headByte === 210) {
        object = this.readI32();
      } else if (headByte === 211) {
        if (this.useBigInt64) {
          object = this.readI64AsBigInt();
        } else {
          object = this.readI64();
        }
      } else if (headByte === 217) {
        const byteLength = this.lookU8();
        object = this.decodeString(byteLength, 1);
      } else if (headByte === 218) {
        const byteLength = this.lookU16();
        object = this.decodeString(byteLength, 2);
      } else if (headByte === 219) {
        const byteLength = this.lookU32();
        object = this.decodeString(byteLength, 4);
      } else if (headByte === 220) {
        const size = this.readU16();
        if (size !== 0) {
          this.pushArrayState(size);
          this.complete();
          continue DECODE;
        } else {
          object = [];
        }
      } else if (headByte === 221) {
        const size = this.readU32();
        if (size !== 0) {
          this.pushArrayState(size);
          this.complete();
          continue DECODE;
        } else {
          object = [];
        }
      } else if (headByte === 222) {
        const size = this.readU16();
        if (size !== 0) {
          this.pushMapState(size);
          this.complete();
          continue DECODE;
        } else {
          object = {};
        }
      } else if (headByte === 223) {
        const size = this.readU32();
        if (size !== 0) {
          this.pushMapState(size);
          this.complete();
          continue DECODE;
        } else {
          object = {};
        }
      } else if (headByte === 196) {
        const size = this.lookU8();
        object = this.decodeBinary(size, 1);
      } else if (headByte === 197) {
        const size = this.lookU16();
        object = this.decodeBinary(size, 2);
      } else if (headByte === 198) {
        const size = this.lookU32();
        object = this.decodeBinary(size, 4);
      } else if (headByte === 212) {
        object = this.decodeExtension(1, 0);
      } else if (headByte === 213) {
        object = this.decodeExtension(2, 0);
      } else if (headByte === 214) {
        object = this.decodeExtension(4, 0);
      } else if (headByte === 215) {
        object = this.decodeExtension(8, 0);
      } else if (headByte === 216) {
        object = this.decodeExtension(16, 0);
      } else if (headByte === 199) {
        const size = this.lookU8();
        object = this.decodeExtension(size, 1);
      } else if (headByte === 200) {
        const size = this.lookU16();
        object = this.decodeExtension(size, 2);
      } else if (headByte === 201) {
        const size = this.lookU32();
        object = this.decodeExtension(size, 4);
      } else {
        throw new DecodeError(`Unrecognized type byte: ${prettyByte(headByte)}`);
      }
      this.complete();
      const stack = this.stack;
      while (stack.length > 0) {
        const state = stack.top();
        if (state.type === STATE_ARRAY) {
          state.array[state.position] = object;
          state.position++;
          if (state.position === state.size) {
            object = state.array;
            stack.release(state);
          } else {
            continue DECODE;
          }
        } else if (state.type === STATE_MAP_KEY) {
          if (object === "__proto__") {
            throw new DecodeError("The key __proto__ is not allowed");
          }
          state.key = this.mapKeyConverter(object);
          state.type = STATE_MAP_VALUE;
          continue DECODE;
        } else {
          state.map[state.key] = object;
          state.readCount++;
          if (state.readCount === state.size) {
            object = state.map;
            stack.release(state);
          } else {
            state.key = null;
            state.type = STATE_MAP_KEY;
            continue DECODE;
          }
        }
      }
      return object;
    }
  }
  readHeadByte() {
    if (this.headByte === HEAD_BYTE_REQUIRED) {
      this.headByte = this.readU8();
    }
    return this.headByte;
  }
  complete() {
    this.headByte = HEAD_BYTE_REQUIRED;
  }
  readArraySize() {
    const headByte = this.readHeadByte();
    switch (headByte) {
      case 220:
        return this.readU16();
      case 221:
        return this.readU32();
      default: {
        if (headByte < 160) {
          return headByte - 144;
        } else {
          throw new DecodeError(`Unrecognized array type byte: ${prettyByte(headByte)}`);
        }
      }
    }
  }
  pushMapState(size) {
    if (size > this.maxMapLength) {
      throw new DecodeError(`Max length exceeded: map length (${size}) > maxMapLengthLength (${this.maxMapLength})`);
    }
    this.stack.pushMapState(size);
  }
  pushArrayState(size) {
    if (size > this.maxArrayLength) {
      throw new DecodeError(`Max length exceeded: array length (${size}) > maxArrayLength (${this.maxArrayLength})`);
    }
    this.stack.pushArrayState(size);
  }
  decodeString(byteLength, headerOffset) {
    if (!this.rawStrings || this.stateIsMapKey()) {
      return this.decodeUtf8String(byteLength, headerOffset);
    }
    return this.decodeBinary(byteLength, headerOffset);
  }
  /**
   * @throws {@link RangeError}
   */
  decodeUtf8String(byteLength, headerOffset) {
    if (byteLength > this.maxStrLength) {
      throw new DecodeError(`Max length exceeded: UTF-8 byte length (${byteLength}) > maxStrLength (${this.maxStrLength})`);
    }
    if (this.bytes.byteLength < this.pos + headerOffset + byteLength) {
      throw MORE_DATA;
    }
    const offset = this.pos + headerOffset;
    let object;
    if (this.stateIsMapKey() && this.keyDecoder?.canBeCached(byteLength)) {
      object = this.keyDecoder.decode(this.bytes, offset, byteLength);
    } else {
      object = utf8Decode(this.bytes, offset, byteLength);
    }
    this.pos += headerOffset + byteLength;
    return object;
  }
  stateIsMapKey() {
    if (this.stack.length > 0) {
      const state = this.stack.top();
      return state.type === STATE_MAP_KEY;
    }
    return false;
  }
  /**
   * @throws {@link RangeError}
   */
  decodeBinary(byteLength, headOffset) {
    if (byteLength > this.maxBinLength) {
      throw new DecodeError(`Max length exceeded: bin length (${byteLength}) > maxBinLength (${this.maxBinLength})`);
    }
    if (!this.hasRemaining(byteLength + headOffset)) {
      throw MORE_DATA;
    }
    const offset = this.pos + headOffset;
    const object = this.bytes.subarray(offset, offset + byteLength);
    this.pos += headOffset + byteLength;
    return object;
  }
  decodeExtension(size, headOffset) {
    if (size > this.maxExtLength) {
      throw new DecodeError(`Max length exceeded: ext length (${size}) > maxExtLength (${this.maxExtLength})`);
    }
    const extType = this.view.getInt8(this.pos + headOffset);
    const data = this.decodeBinary(
      size,
      headOffset + 1
      /* extType */
    );
    return this.extensionCodec.decode(data, extType, this.context);
  }
  lookU8() {
    return this.view.getUint8(this.pos);
  }
  lookU16() {
    return this.view.getUint16(this.pos);
  }
  lookU32() {
    return this.view.getUint32(this.pos);
  }
  readU8() {
    const value = this.view.getUint8(this.pos);
    this.pos++;
    return value;
  }
  readI8() {
    const value = this.view.getInt8(this.pos);
    this.pos++;
    return value;
  }
  readU16() {
    const value = this.view.getUint16(this.pos);
    this.pos += 2;
    return value;
  }
  readI16() {
    const value = this.view.getInt16(this.pos);
    this.pos += 2;
    return value;
  }
  readU32() {
    const value = this.view.getUint32(this.pos);
    this.pos += 4;
    return value;
  }
  readI32() {
    const value = this.view.getInt32(this.pos);
    this.pos += 4;
    return value;
  }
  readU64() {
    const value = getUint64(this.view, this.pos);
    this.pos += 8;
    return value;
  }
  readI64() {
    const value = getInt64(this.view, this.pos);
    this.pos += 8;
    return value;
  }
  readU64AsBigInt() {
    const value = this.view.getBigUint64(this.pos);
    this.pos += 8;
    return value;
  }
  readI64AsBigInt() {
    const value = this.view.getBigInt64(this.pos);
    this.pos += 8;
    return value;
  }
  readF32() {
    const value = this.view.getFloat32(this.pos);
    this.pos += 4;
    return value;
  }
  readF64() {
    const value = this.view.getFloat64(this.pos);
    this.pos += 8;
    return value;
  }
};

// node_modules/@msgpack/msgpack/dist.esm/decode.mjs
function decode(buffer, options) {
  const decoder = new Decoder(options);
  return decoder.decode(buffer);
}

// src/protocol.js
var Json = Object.freeze({
  name: "wse-default-json",
  binary: false,
  encode(frame) {
    return JSON.stringify(frame);
  },
  decode(data) {
    if (typeof data !== "string") throw new TypeError("a JSON frame must arrive as text");
    return JSON.parse(data);
  }
});
var MessagePack = Object.freeze({
  name: "wse-msgpack",
  binary: true,
  encode(frame) {
    return encode(frame, { ignoreUndefined: true });
  },
  decode(data) {
    if (typeof data === "string") throw new TypeError("a MessagePack frame must arrive as binary");
    return decode(data instanceof ArrayBuffer ? new Uint8Array(data) : data);
  }
});
function readFrame(message) {
  if (!Array.isArray(message) || message.length === 0 || message.length > 3) return null;
  const [type, payload = null, stamp = null] = message;
  if (typeof type !== "string" || type === "") return null;
  return {
    type,
    payload: payload ?? null,
    stamp: typeof stamp === "string" && stamp !== "" ? stamp : null
  };
}

// src/extensions.js
var PRESENCE_MESSAGE = "presence";
var DM_MESSAGE = "dm";
var Rooms = class {
  #client;
  #joined = /* @__PURE__ */ new Set();
  constructor(client) {
    this.#client = client;
    client.onReady((_welcome, { reconnected }) => {
      if (!reconnected) {
        this.#joined.clear();
        return;
      }
      for (const room of [...this.#joined]) {
        client.call("rooms.join", { room }).catch((error) => {
          if (!isClientSide(error)) this.#joined.delete(room);
        });
      }
    });
  }
  /** Joins `room`: resolves true when joined now, false when already in it. */
  async join(room) {
    const joined = await this.#client.call("rooms.join", { room });
    this.#joined.add(room);
    return joined;
  }
  /** Leaves `room`: resolves whether this connection was in it. */
  async leave(room) {
    this.#joined.delete(room);
    return this.#client.call("rooms.leave", { room });
  }
  /** The rooms this connection is in, as the server sees them, sorted. */
  mine() {
    return this.#client.call("rooms.mine", {});
  }
};
var Presence = class {
  #client;
  #subscribed = false;
  /** user → the newest entry seen, online or not (an offline one keeps its version). */
  #entries = /* @__PURE__ */ new Map();
  /** The entries of a subscription whose snapshot is on its way, else null. */
  #building = null;
  #listeners = /* @__PURE__ */ new Set();
  constructor(client) {
    this.#client = client;
    client.on(PRESENCE_MESSAGE, (entry) => {
      if (this.#building !== null) apply(this.#building, entry);
      else if (this.#subscribed && apply(this.#entries, entry)) this.#changed(entry);
    });
    client.onReady(() => {
      if (this.#subscribed) this.subscribe().catch(() => {
      });
    });
  }
  /**
   * Subscribes to presence changes: resolves with the online list it starts from. Listeners
   * added with `onChange` hear every change from then on.
   */
  async subscribe() {
    const building = /* @__PURE__ */ new Map();
    this.#building = building;
    this.#subscribed = true;
    let snapshot;
    try {
      snapshot = await this.#client.call("presence.subscribe", {});
    } catch (error) {
      if (this.#building === building) {
        this.#building = null;
        if (!isClientSide(error)) this.#end();
      }
      throw error;
    }
    if (this.#building !== building) return this.list();
    for (const entry of Array.isArray(snapshot) ? snapshot : []) apply(building, entry);
    this.#building = null;
    this.#entries = building;
    this.#changed(null);
    return this.list();
  }
  /** Ends the subscription and empties the list; resolves whether there was one. */
  unsubscribe() {
    this.#building = null;
    this.#end();
    return this.#client.call("presence.unsubscribe", {});
  }
  /** The online list asked of the server now, without subscribing. */
  online() {
    return this.#client.call("presence.online", {});
  }
  /** The online users as last known, sorted by user id. */
  list() {
    return [...this.#entries.values()].filter((entry) => entry.online).sort((a, b) => a.user < b.user ? -1 : a.user > b.user ? 1 : 0);
  }
  /**
   * `fn(list, change)` after each applied change (`change` null for a new snapshot, or the
   * list emptied when the subscription ends). Returns a function that removes it.
   */
  onChange(fn) {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }
  #end() {
    this.#subscribed = false;
    this.#entries = /* @__PURE__ */ new Map();
    this.#changed(null);
  }
  #changed(change) {
    const list = this.list();
    for (const fn of [...this.#listeners]) fn(list, change);
  }
};
function apply(entries, entry) {
  if (entry === null || typeof entry !== "object" || typeof entry.user !== "string") return false;
  const version = Number(entry.version);
  if (!Number.isFinite(version)) return false;
  const held = entries.get(entry.user);
  if (held !== void 0 && !(version > Number(held.version))) return false;
  entries.set(entry.user, entry);
  return true;
}
function isClientSide(error) {
  return typeof error?.code === "string" && error.code.startsWith("wse.client.");
}
var DirectMessages = class {
  #client;
  constructor(client) {
    this.#client = client;
  }
  /**
   * Sends `payload` to every device of user `to`: resolves true when delivered, false when
   * `to` is offline or unavailable; rejects with the server's error when refused.
   */
  send(to, payload) {
    return this.#client.call("dm.send", { to, payload });
  }
  /** `fn({from, payload})` for each private message. Returns a function that removes it. */
  onMessage(fn) {
    return this.#client.on(DM_MESSAGE, fn);
  }
};

// src/client.js
var HI = "~wse:hi";
var CHALLENGE = "~wse:challenge";
var WELCOME = "~wse:welcome";
var RESPONSE = "~wse:response";
var RESPONSE_ERR = "~wse:response-err";
var RESERVED = "~wse:";
var Status = Object.freeze({
  /** Made, never connected. */
  IDLE: "idle",
  /** Opening the socket and authenticating. */
  CONNECTING: "connecting",
  /** Welcomed: calls and messages flow. */
  READY: "ready",
  /** Lost the connection and waiting to try again. */
  RECONNECTING: "reconnecting",
  /** Closed, and staying closed until `connect` is called again. */
  OFFLINE: "offline"
});
var Reason = Object.freeze({
  NOT_AUTHORIZED: "wse.not-authorized",
  PROTOCOL_ERROR: "wse.protocol-error",
  CLIENTS_CONCURRENCY: "wse.clients-concurrency",
  BY_CLIENT: "wse.by-client",
  BY_SERVER: "wse.by-server",
  LOGOUT: "wse.logout",
  JUMP: "jump"
});
var RECONNECT_CODES = /* @__PURE__ */ new Set([1005, 1006, 1011, 1012, 1013, 1014, 4e3]);
var JUMP_CODE = 4e3;
var CONNECTING = 0;
var STAMP_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
var WseClient = class {
  #url;
  #protocol;
  #timeout;
  #reconnect;
  #WebSocket;
  #status = Status.IDLE;
  #identity = null;
  #meta = {};
  #solver = null;
  /** The current socket with what belongs to it: pending calls, the connect promise. */
  #link = null;
  #retryTimer = null;
  #attempt = 0;
  #messageHandlers = /* @__PURE__ */ new Map();
  #procedures = /* @__PURE__ */ new Map();
  #listeners = { status: /* @__PURE__ */ new Set(), ready: /* @__PURE__ */ new Set(), close: /* @__PURE__ */ new Set(), error: /* @__PURE__ */ new Set(), ignored: /* @__PURE__ */ new Set() };
  /**
   * @param {object} options see `WseClientOptions` in index.d.ts.
   */
  constructor(options) {
    const { url, protocol = Json, timeout = 2e4, reconnect = true, WebSocket } = options ?? {};
    if (typeof url !== "string" && !(url instanceof URL)) throw new TypeError("options.url is required");
    this.#url = String(url);
    this.#protocol = protocol;
    this.#timeout = checkedTimeout(timeout);
    this.#reconnect = reconnect === false ? null : { base: 1e3, max: 3e4, ...reconnect === true ? {} : reconnect };
    if (this.#reconnect !== null) {
      const { base, max } = this.#reconnect;
      if (!(base >= 1) || !(max >= base)) throw new TypeError("reconnect needs 1 <= base <= max (ms)");
    }
    this.#WebSocket = WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== "function") {
      throw new TypeError("no WebSocket here: pass options.WebSocket (Node 20 needs --experimental-websocket)");
    }
    this.rooms = new Rooms(this);
    this.presence = new Presence(this);
    this.dm = new DirectMessages(this);
  }
  /** The endpoint this client connects to (changed by `jump`). */
  get url() {
    return this.#url;
  }
  /** Where the client is: one of `Status`. */
  get status() {
    return this.#status;
  }
  /** The codec in use. */
  get protocol() {
    return this.#protocol;
  }
  /**
   * Opens the connection and authenticates: resolves with the server's welcome; rejects with
   * `wse.not-authorized` when refused, with the server's close reason when it closes first,
   * or with `wse.client.ws-error` when the socket cannot open.
   */
  connect(identity, meta = {}) {
    if (this.#link !== null || this.#retryTimer !== null) {
      return Promise.reject(new WseError(Code.ALREADY_CONNECTED));
    }
    this.#identity = identity ?? null;
    this.#meta = meta ?? {};
    this.#attempt = 0;
    return this.#open(Status.CONNECTING);
  }
  /**
   * Sets the challenge solver: called with the server's quest, returns (or resolves to) the
   * solution. `hmacSolver(secret)` solves the standard HMAC challenge.
   */
  challenge(solver) {
    if (typeof solver !== "function") throw new WseError(Code.INVALID_CRA_HANDLER);
    this.#solver = solver;
  }
  /**
   * Calls the server's procedure `name`: resolves with its result, rejects with a `WseError`
   * holding the server's code and details, `wse.client.rp.timeout` after `timeout` ms,
   * `wse.client.rp.disconnect` when the connection closes first, `wse.client.not-ready`
   * before the welcome; with `signal`, rejects with its reason when it aborts.
   */
  call(name, payload = null, { timeout = this.#timeout, signal } = {}) {
    if (!isApplicationType(name)) return Promise.reject(new TypeError(`not a procedure name: ${JSON.stringify(name)}`));
    let limit;
    try {
      limit = checkedTimeout(timeout);
    } catch (error) {
      return Promise.reject(error);
    }
    const link = this.#link;
    if (link === null || this.#status !== Status.READY) {
      return Promise.reject(new WseError(Code.NOT_READY));
    }
    if (signal?.aborted) return Promise.reject(signal.reason);
    let stamp;
    do
      stamp = randomStamp();
    while (link.pending.has(stamp));
    return new Promise((resolve, reject) => {
      const settle = (outcome) => {
        link.pending.delete(stamp);
        clearTimeout(timer);
        signal?.removeEventListener("abort", abort);
        outcome();
      };
      const timer = limit === Infinity ? void 0 : setTimeout(() => settle(() => reject(new WseError(Code.RP_TIMEOUT, { rpc: name }))), limit);
      const abort = () => settle(() => reject(signal.reason));
      signal?.addEventListener("abort", abort, { once: true });
      link.pending.set(stamp, {
        resolve: (result) => settle(() => resolve(result)),
        reject: (error) => settle(() => reject(error))
      });
      try {
        this.#write(link, [name, payload ?? null, stamp]);
      } catch (error) {
        settle(() => reject(error));
      }
    });
  }
  /** Sends a one-way message; throws `wse.client.not-ready` before the welcome. */
  send(type, payload = null) {
    if (!isApplicationType(type)) throw new TypeError(`not a message type: ${JSON.stringify(type)}`);
    const link = this.#link;
    if (link === null || this.#status !== Status.READY) throw new WseError(Code.NOT_READY);
    this.#write(link, [type, payload ?? null, null]);
  }
  /**
   * Handles messages of `type` from the server: `handler(payload, type)`. Returns a function
   * that removes the handler.
   */
  on(type, handler) {
    let handlers = this.#messageHandlers.get(type);
    if (handlers === void 0) this.#messageHandlers.set(type, handlers = /* @__PURE__ */ new Set());
    handlers.add(handler);
    return () => {
      handlers.delete(handler);
      if (handlers.size === 0 && this.#messageHandlers.get(type) === handlers) this.#messageHandlers.delete(type);
    };
  }
  /**
   * Registers a procedure the server may call on this connection: `handler(payload)` returns
   * (or resolves to) the result; a thrown `WseError` answers with its code and details, any
   * other throw with `wse.server.rp.failed`. Throws `wse.server.rp.already-registered` for a
   * name registered twice.
   */
  register(name, handler) {
    if (this.#procedures.has(name)) throw new WseError(Code.RP_ALREADY_REGISTERED, { rpc: name });
    this.#procedures.set(name, handler);
  }
  /** Removes a registered procedure; whether it was registered. */
  unregister(name) {
    return this.#procedures.delete(name);
  }
  /** `fn(status)` on every status change. Returns a function that removes it. */
  onStatus(fn) {
    return this.#listen("status", fn);
  }
  /** `fn(welcome, {reconnected})` on every welcome. Returns a function that removes it. */
  onReady(fn) {
    return this.#listen("ready", fn);
  }
  /** `fn(code, reason)` when a connection closes. Returns a function that removes it. */
  onClose(fn) {
    return this.#listen("close", fn);
  }
  /** `fn(error)` on a transport or protocol error. Returns a function that removes it. */
  onError(fn) {
    return this.#listen("error", fn);
  }
  /** `fn(type, payload)` for a message no handler took. Returns a function that removes it. */
  onIgnored(fn) {
    return this.#listen("ignored", fn);
  }
  /**
   * Leaves for another server: closes with 4000 `jump` and connects to `url` with the same
   * identity and meta unless new ones are given; resolves with the new server's welcome.
   */
  jump(url, identity = this.#identity, meta = this.#meta) {
    this.#stop(JUMP_CODE, Reason.JUMP);
    this.#url = String(url);
    return this.connect(identity, meta);
  }
  /** Closes the connection for good (no reconnection), with `reason` (default `wse.by-client`). */
  close(reason = Reason.BY_CLIENT) {
    if (typeof reason !== "string" || new TextEncoder().encode(reason).length > 123) {
      throw new TypeError("a close reason is a string of at most 123 UTF-8 bytes");
    }
    this.#stop(1e3, reason, Status.OFFLINE);
  }
  #listen(event, fn) {
    this.#listeners[event].add(fn);
    return () => this.#listeners[event].delete(fn);
  }
  #emit(event, ...args) {
    for (const fn of [...this.#listeners[event]]) {
      try {
        fn(...args);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
  #setStatus(status) {
    if (this.#status === status) return;
    this.#status = status;
    this.#emit("status", status);
  }
  /**
   * Ends the current socket and any pending retry, failing what waited on it; then takes
   * `status` (when given) before the close listeners run.
   */
  #stop(code, reason, status = void 0) {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    const link = this.#link;
    this.#link = null;
    if (link !== null) {
      try {
        link.ws.close(code, reason);
      } catch {
      }
      this.#release(link, new WseError(reason === Reason.JUMP ? Code.RP_DISCONNECT : reason));
    }
    if (status !== void 0) this.#setStatus(status);
    if (link !== null) this.#emit("close", code, reason);
  }
  /** Fails a socket's pending calls and its connect promise. */
  #release(link, connectError) {
    for (const call of link.pending.values()) call.reject(new WseError(Code.RP_DISCONNECT));
    link.pending.clear();
    link.reject?.(connectError);
    link.resolve = link.reject = null;
  }
  #open(status) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new this.#WebSocket(this.#url, this.#protocol.name);
      } catch (error) {
        reject(new WseError(Code.WS_ERROR, String(error?.message ?? error)));
        this.#setStatus(Status.OFFLINE);
        return;
      }
      if (this.#protocol.binary) ws.binaryType = "arraybuffer";
      const link = { ws, pending: /* @__PURE__ */ new Map(), welcomed: false, resolve, reject };
      this.#link = link;
      this.#setStatus(status);
      ws.onopen = () => {
        if (this.#link !== link) return;
        this.#write(link, [HI, { identity: this.#identity, meta: this.#meta }, null]);
      };
      ws.onmessage = (event) => {
        if (this.#link === link) this.#receive(link, event.data);
      };
      ws.onerror = () => {
        if (this.#link !== link) return;
        this.#emit("error", new WseError(Code.WS_ERROR));
        if (ws.readyState === CONNECTING) {
          this.#closed(link, 1006, "");
          try {
            ws.close();
          } catch {
          }
        }
      };
      ws.onclose = (event) => {
        if (this.#link === link) this.#closed(link, event.code, event.reason);
      };
    });
  }
  #closed(link, code, reason) {
    this.#link = null;
    const connectError = reason === Reason.NOT_AUTHORIZED ? new WseError(Code.NOT_AUTHORIZED) : new WseError(reason || Code.WS_ERROR, { code });
    const retrying = this.#reconnect !== null && RECONNECT_CODES.has(code) && (link.welcomed || this.#status === Status.RECONNECTING);
    if (retrying) {
      const { base, max } = this.#reconnect;
      const ceiling = Math.min(max, base * 2 ** Math.min(this.#attempt, 16));
      const delay = code === JUMP_CODE ? 0 : Math.min(max, ceiling * (1 + Math.random()));
      this.#attempt += 1;
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = null;
        if (this.#link !== null) return;
        this.#open(Status.RECONNECTING).catch(() => {
        });
      }, delay);
    }
    this.#release(link, connectError);
    this.#setStatus(retrying ? Status.RECONNECTING : Status.OFFLINE);
    this.#emit("close", code, reason);
  }
  #write(link, frame) {
    link.ws.send(this.#protocol.encode(frame));
  }
  #receive(link, data) {
    let frame;
    try {
      frame = readFrame(this.#protocol.decode(data));
    } catch {
      frame = null;
    }
    if (frame === null) {
      this.#emit("error", new WseError(Code.PROTOCOL_VIOLATION, void 0, "a message that is not a WSE frame"));
      return;
    }
    if (!link.welcomed) {
      this.#handshake(link, frame);
      return;
    }
    const { type, payload, stamp } = frame;
    if (stamp !== null && (type === RESPONSE || type === RESPONSE_ERR)) {
      const call = link.pending.get(stamp);
      if (call === void 0) {
        this.#emit("ignored", type, payload);
        return;
      }
      if (type === RESPONSE) call.resolve(payload);
      else call.reject(WseError.fromWire(payload));
    } else if (stamp !== null) {
      this.#serve(link, type, payload, stamp);
    } else {
      const handlers = this.#messageHandlers.get(type);
      if (handlers === void 0) {
        this.#emit("ignored", type, payload);
        return;
      }
      for (const handler of [...handlers]) {
        try {
          handler(payload, type);
        } catch (error) {
          queueMicrotask(() => {
            throw error;
          });
        }
      }
    }
  }
  #handshake(link, { type, payload }) {
    if (type === CHALLENGE) {
      this.#solve(link, payload);
    } else if (type === WELCOME) {
      link.welcomed = true;
      const reconnected = this.#status === Status.RECONNECTING;
      this.#attempt = 0;
      this.#setStatus(Status.READY);
      link.resolve?.(payload);
      link.resolve = link.reject = null;
      this.#emit("ready", payload, { reconnected });
    }
  }
  async #solve(link, quest) {
    if (this.#solver === null) {
      this.#stop(1e3, Code.INVALID_CRA_HANDLER, Status.OFFLINE);
      return;
    }
    let solution;
    try {
      solution = await this.#solver(quest);
    } catch (error) {
      this.#emit("error", error instanceof WseError ? error : new WseError(Code.INVALID_CRA_HANDLER));
      if (this.#link === link) {
        this.#stop(1e3, Code.INVALID_CRA_HANDLER, Status.OFFLINE);
      }
      return;
    }
    if (this.#link !== link) return;
    try {
      this.#write(link, [CHALLENGE, solution ?? null, null]);
    } catch {
      this.#emit("error", new WseError(Code.INVALID_CRA_HANDLER, void 0, "the solution cannot be encoded"));
      this.#stop(1e3, Code.INVALID_CRA_HANDLER, Status.OFFLINE);
    }
  }
  async #serve(link, name, payload, stamp) {
    const procedure = this.#procedures.get(name);
    let answer;
    if (procedure === void 0) {
      answer = [RESPONSE_ERR, { code: Code.RP_NOT_REGISTERED }, stamp];
    } else {
      try {
        answer = [RESPONSE, await procedure(payload) ?? null, stamp];
      } catch (error) {
        const wire = error instanceof WseError ? error.toWire() : { code: Code.RP_FAILED };
        if (wire.details !== null && typeof wire.details === "object" && !Array.isArray(wire.details)) {
          wire.details = { ...wire.details, rpc: name };
        }
        answer = [RESPONSE_ERR, wire, stamp];
      }
    }
    if (this.#link !== link) return;
    try {
      this.#write(link, answer);
    } catch {
      this.#write(link, [RESPONSE_ERR, { code: Code.RP_FAILED }, stamp]);
    }
  }
};
function isApplicationType(name) {
  return typeof name === "string" && name !== "" && !name.startsWith(RESERVED);
}
function checkedTimeout(ms) {
  if (ms === Infinity) return ms;
  if (typeof ms !== "number" || !(ms >= 1) || ms > 2 ** 31 - 1) {
    throw new TypeError("a timeout is a number of ms from 1 to 2^31 - 1, or Infinity");
  }
  return ms;
}
function randomStamp() {
  const bytes = crypto.getRandomValues(new Uint8Array(10));
  let stamp = "";
  for (const byte of bytes) stamp += STAMP_ALPHABET[byte % STAMP_ALPHABET.length];
  return stamp;
}

// src/challenge.js
function hmacSolver(secret) {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) {
    throw new WseError(
      Code.INVALID_CRA_HANDLER,
      void 0,
      "WebCrypto is not available here (a page served over plain http other than localhost?)"
    );
  }
  const encoder = new TextEncoder();
  const key = subtle.importKey(
    "raw",
    encoder.encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"]
  );
  key.catch(() => {
  });
  return async (quest) => {
    if (quest === null || typeof quest !== "object" || !Number.isSafeInteger(quest.timestamp) || typeof quest.nonce !== "string") {
      throw new WseError(
        Code.INVALID_CRA_HANDLER,
        void 0,
        "the quest is not the standard HMAC challenge {timestamp, nonce}"
      );
    }
    const signature = await subtle.sign("HMAC", await key, encoder.encode(`${quest.timestamp}${quest.nonce}`));
    return Array.from(new Uint8Array(signature), (byte) => byte.toString(16).padStart(2, "0")).join("");
  };
}
export {
  Code,
  DM_MESSAGE,
  DirectMessages,
  Json,
  MessagePack,
  PRESENCE_MESSAGE,
  Presence,
  Reason,
  Rooms,
  Status,
  WseClient,
  WseError,
  hmacSolver
};
