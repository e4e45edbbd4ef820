/**
 * The value codec: task arguments and results as bytes.
 *
 * What travels, exactly (type and value): numbers (NaN, -0, ±Infinity included), strings
 * (lone surrogates included), booleans, null, undefined (also as array items and property
 * values: the property still exists after decoding), bigint of any size, Date (invalid
 * ones too), arrays, plain objects (`Object.create(null)` ones keep their null
 * prototype, an own `__proto__` key stays an own key), Map, Set, ArrayBuffer, every
 * TypedArray (Float16Array where the runtime has it), DataView, RegExp (source and
 * flags), FutureRef, and any nesting of these. Also, with documented losses:
 * - sparse arrays: holes come back as `undefined`;
 * - a Node Buffer comes back as a Uint8Array, a SharedArrayBuffer as an ArrayBuffer;
 * - subclasses of Map, Set, Date, Array and the typed arrays come back as the base class
 *   (as with structuredClone), and objects from another realm (vm context, iframe) are
 *   accepted like this realm's;
 * - an Error comes back as an Error of the same standard class (Error, TypeError, ...;
 *   any other class as a plain Error whose `name` is the class name) with its message,
 *   stack, cause and own enumerable properties;
 * - several references to one object are sent as copies (one typed array or ArrayBuffer
 *   referenced twice is sent once and comes back as one object); a cycle throws.
 * Anything else (functions, symbols, class instances, Promise, WeakMap, boxed
 * primitives, ...) throws a CodecError naming the path and what to do instead.
 *
 * Layout. Byte 0 is 0xC1 (the byte MessagePack never uses, so no plain msgpack decoder
 * mistakes a value for a message), byte 1 is the version (high nibble) and flags.
 * - No binary data: `C1 ver msgpack...`.
 * - With binary data: a 16 byte header `C1 ver 0 0 | skeleton length u32 LE | blob area
 *   length u64 LE`, then the msgpack skeleton, zero padding to a multiple of 8, then the
 *   blob area: the bytes of every typed array / ArrayBuffer / DataView, each at an offset
 *   that is a multiple of 8. So encoding copies each array's bytes exactly once, and the
 *   output is one exactly sized ArrayBuffer that nothing else uses (safe to transfer) —
 *   or, when asked (`shareOver`), a SharedArrayBuffer, so that bytes kept by one thread
 *   can be posted to another without a copy.
 * Values msgpack has no exact form for appear in the skeleton as "tagged arrays"
 * `[C1, tag, ...payload]` (msgpackr's C1 marker cannot be produced by user data): this
 * needs no msgpackr extension, so the codec does not touch msgpackr's global extension
 * table, which other modules share. Decoding unpacks the skeleton and, only when the
 * flags say tags are present, walks it once to rebuild tagged values in place.
 *
 * Decoded typed arrays and DataViews are VIEWS into the input bytes when their bytes are
 * suitably aligned there (always, when `bytes.byteOffset` is a multiple of 8), and copies
 * otherwise. So after decodeValue the caller must not reuse or mutate the input bytes,
 * and transferring a decoded array's `.buffer` transfers the whole input. A decoded
 * ArrayBuffer is always a copy, and so is every typed array decoded from bytes in a
 * SharedArrayBuffer: a decoded value never shares memory with another thread.
 */
import { Packr, C1 } from 'msgpackr'
import { SerializationError, nameErrorClass } from './errors.js'
import { forEachNested } from './nested.js'

/** Marker placed in task arguments where a Future was: replaced by the value on the worker. */
export class FutureRef {
  constructor(readonly key: string) {}
}

/**
 * A value that cannot be encoded, or bytes that cannot be decoded. `path` names where in
 * the value the problem is, e.g. "args[1].foo" (empty when decoding). It is a
 * SerializationError, so it crosses the wire with code 'serialization'.
 */
export class CodecError extends SerializationError {
  readonly path: string
  constructor(message: string, path = '', options?: { cause?: unknown }) {
    super(message, options)
    this.path = path
  }
}
nameErrorClass(CodecError, 'CodecError')

// ---------------------------------------------------------------------------------------
// Format constants (part of the wire format: never renumber)

const MAGIC = 0xc1
const VERSION = 0x10
const F_TAGS = 0x01
const F_BLOBS = 0x02
const BLOB_HEADER = 16

const T_NEGZERO = 1 // [C1, 1]
const T_REF = 2 // [C1, 2, key]
const T_MAP = 3 // [C1, 3, k0, v0, k1, v1, ...]
const T_SET = 4 // [C1, 4, v0, v1, ...]
const T_OBJ = 5 // [C1, 5, nullProto 0|1, k0, v0, ...]  (keys may be T_WSTR)
const T_BLOB = 6 // [C1, 6, kind, offset, byteLength]
const T_WSTR = 7 // [C1, 7, utf16le bytes]  (string with lone surrogates)
const T_ERR = 8 // [C1, 8, name, message, stack|undefined, hasCause 0|1, cause, props]
const T_REGEXP = 9 // [C1, 9, source, flags]

/** Nesting limit of the encoded skeleton (msgpackr recurses; deeper would overflow the stack). */
const MAX_DEPTH = 512

type TypedArrayCtor = new (buffer: ArrayBufferLike, byteOffset?: number, length?: number) => ArrayBufferView
interface Kind { name: string; bpe: number; ctor: TypedArrayCtor | undefined }

// blob kinds: index = wire code
const KIND_AB = 0
const KIND_DV = 1
const g = globalThis as unknown as Record<string, unknown>
const KINDS: Kind[] = [
  { name: 'ArrayBuffer', bpe: 1, ctor: undefined },
  { name: 'DataView', bpe: 1, ctor: undefined },
  ...['Int8', 'Uint8', 'Uint8Clamped', 'Int16', 'Uint16', 'Int32', 'Uint32', 'Float32', 'Float64', 'BigInt64', 'BigUint64', 'Float16'].map(
    (t): Kind => {
      const ctor = g[t + 'Array'] as (TypedArrayCtor & { BYTES_PER_ELEMENT: number }) | undefined
      return { name: t + 'Array', bpe: ctor ? ctor.BYTES_PER_ELEMENT : 2, ctor }
    },
  ),
]
const KIND_BY_NAME = new Map<string, number>(KINDS.map((k, i) => [k.name, i]))

// Brand checks that work across realms and ignore Symbol.toStringTag spoofing.
const typedArrayTag = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Uint8Array.prototype) as object, Symbol.toStringTag)!.get as (this: unknown) => string | undefined
const abByteLength = Object.getOwnPropertyDescriptor(ArrayBuffer.prototype, 'byteLength')!.get as (this: unknown) => number
const mapSize = Object.getOwnPropertyDescriptor(Map.prototype, 'size')!.get as (this: unknown) => number
const setSize = Object.getOwnPropertyDescriptor(Set.prototype, 'size')!.get as (this: unknown) => number
const dateGetTime = Date.prototype.getTime
const regexpSource = Object.getOwnPropertyDescriptor(RegExp.prototype, 'source')!.get as (this: unknown) => string
const SAB = g.SharedArrayBuffer as (new (n: number) => object) | undefined
const sabByteLength = SAB ? (Object.getOwnPropertyDescriptor(SAB.prototype, 'byteLength')!.get as (this: unknown) => number) : undefined
const objectToString = Object.prototype.toString
const hasOwn = Object.prototype.hasOwnProperty

function brand(v: object, getter: ((this: unknown) => unknown) | undefined): boolean {
  if (!getter) return false
  try {
    getter.call(v)
    return true
  } catch {
    return false
  }
}

const nativeWellFormed = (String.prototype as unknown as { isWellFormed?: (this: string) => boolean }).isWellFormed
const LONE_SURROGATE = /\p{Cs}/u
const isWellFormed: (s: string) => boolean = nativeWellFormed
  ? (s) => nativeWellFormed.call(s)
  : (s) => !LONE_SURROGATE.test(s)

const packr = new Packr({
  useRecords: false,
  mapsAsObjects: true,
  variableMapSize: true,
  useToJSON: false,
  moreTypes: false,
  useBigIntExtension: true,
  structuredClone: false,
  int64AsType: 'bigint',
})

// ---------------------------------------------------------------------------------------
// Encoding

type PathSeg = string | number | { s: string }

interface Blob { bytes: Uint8Array; offset: number }

class EncState {
  readonly path: PathSeg[] = []
  readonly objs: object[] = []
  tags = false
  blobs: Blob[] | null = null
  blobTags: Map<object, unknown[]> | null = null
  blobLen = 0
  constructor(readonly root: string) {}
}

const NEG_ZERO_TAG: readonly unknown[] = Object.freeze([C1, T_NEGZERO])

/**
 * Encodes any supported value into bytes. `root` names the value in error paths (e.g.
 * 'args' gives "args[0].cb"). The result owns its whole ArrayBuffer (byteOffset 0), so
 * it may be transferred. With `shareOver`, a result of at least that many bytes is in a
 * SharedArrayBuffer instead (where the runtime has one): posting it to another thread
 * shares it, and the encoding may be kept. Throws CodecError for a value that cannot travel.
 */
export function encodeValue(value: unknown, root = 'value', options?: { shareOver?: number }): Uint8Array {
  const { out, blobStart, blobs } = layout(value, root, options)
  if (blobs) for (const b of blobs) out.set(b.bytes, blobStart + b.offset)
  return out
}

/**
 * An encoding whose binary data is still to be copied in (encodeValueLater): `bytes` is
 * allocated at its full size and holds the header and skeleton; the first `ready` bytes
 * are final. `step(n)` copies about n more bytes (in the arrays' order) and returns the
 * new `ready`; `finish()` copies the rest. Once `ready === bytes.byteLength` it is the
 * encoding encodeValue makes. The arrays are read when copied: they must not change
 * meanwhile.
 */
export interface PendingEncoding {
  readonly bytes: Uint8Array
  readonly ready: number
  step(n: number): number
  finish(): void
}

/**
 * encodeValue, but the binary data is copied in later, step by step (a thread can hand
 * the bytes, in shared memory, to another that sends them while they are being filled).
 */
export function encodeValueLater(value: unknown, root = 'value', options?: { shareOver?: number }): PendingEncoding {
  const { out, blobStart, blobs } = layout(value, root, options)
  const list = blobs ?? []
  let i = 0
  let within = 0
  let ready = list.length ? blobStart + list[0]!.offset : out.byteLength
  const step = (n: number): number => {
    let left = Math.max(1, n)
    while (i < list.length && left > 0) {
      const b = list[i]!
      const k = Math.min(left, b.bytes.byteLength - within)
      out.set(within === 0 && k === b.bytes.byteLength ? b.bytes : b.bytes.subarray(within, within + k), blobStart + b.offset + within)
      within += k
      left -= k
      if (within >= b.bytes.byteLength) { i++; within = 0 }
    }
    ready = i < list.length ? blobStart + list[i]!.offset + within : out.byteLength
    return ready
  }
  return {
    bytes: out,
    get ready() { return ready },
    step,
    finish: () => { step(Infinity) },
  }
}

/** Everything of an encoding but copying the arrays in: the bytes (header and skeleton written), where the blob area starts, and the arrays. */
function layout(value: unknown, root: string, options: { shareOver?: number } | undefined): { out: Uint8Array; blobStart: number; blobs: Blob[] | null } {
  const st = new EncState(root)
  let skeleton: unknown
  try {
    skeleton = prep(value, st, 0, undefined)
  } catch (err) {
    if (err instanceof CodecError) throw err
    const path = formatPath(st.root, st.path)
    throw new CodecError(`cannot send ${path}: reading it threw ${errText(err)}`, path, { cause: err })
  }
  let packed: Uint8Array
  try {
    packed = packr.pack(skeleton) as Uint8Array
  } catch (err) {
    const deep = err instanceof RangeError && /call stack/i.test(err.message)
    throw new CodecError(deep ? `cannot send ${root}: nested too deeply` : `cannot send ${root}: ${errText(err)}`, root, { cause: err })
  }
  const flags = VERSION | (st.tags ? F_TAGS : 0)
  const S = packed.length
  let out: Uint8Array
  let blobStart = 0
  if (!st.blobs) {
    out = new Uint8Array(2 + S)
    out[0] = MAGIC
    out[1] = flags
    if (S > 48) out.set(packed, 2)
    else for (let i = 0; i < S; i++) out[i + 2] = packed[i]!
  } else {
    blobStart = align8(BLOB_HEADER + S)
    const total = blobStart + st.blobLen
    const shareOver = options?.shareOver
    try {
      out = shareOver !== undefined && total >= shareOver && SAB ? new Uint8Array(new SAB(total) as ArrayBufferLike) : new Uint8Array(total)
    } catch (err) {
      throw new CodecError(`cannot send ${root}: ${total} bytes is more than this runtime can allocate`, root, { cause: err })
    }
    out[0] = MAGIC
    out[1] = flags | F_BLOBS
    writeU32(out, 4, S)
    writeU32(out, 8, st.blobLen % 0x100000000)
    writeU32(out, 12, Math.floor(st.blobLen / 0x100000000))
    out.set(packed, BLOB_HEADER)
  }
  if (packed.buffer.byteLength > 0x400000) releasePackBuffer(packed)
  return { out, blobStart, blobs: st.blobs }
}

/** msgpackr keeps its (shared, module level) write buffer; after a big value, give it a small fresh one so the big one can be collected. */
function releasePackBuffer(packed: Uint8Array): void {
  const C = packed.constructor as unknown as { allocUnsafeSlow?: (n: number) => Uint8Array }
  packr.useBuffer(typeof C.allocUnsafeSlow === 'function' ? C.allocUnsafeSlow(8192) : new Uint8Array(8192))
}

function align8(n: number): number {
  return Math.ceil(n / 8) * 8
}

function writeU32(b: Uint8Array, at: number, v: number): void {
  b[at] = v & 0xff
  b[at + 1] = (v >>> 8) & 0xff
  b[at + 2] = (v >>> 16) & 0xff
  b[at + 3] = (v >>> 24) & 0xff
}

function readU32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16)) + b[at + 3]! * 0x1000000
}

/** Returns what msgpackr should pack in place of v (v itself when it packs exactly). `key` is v's key in its parent (for error paths). */
function prep(v: unknown, st: EncState, depth: number, key: PathSeg | undefined): unknown {
  switch (typeof v) {
    case 'number':
      if (v === 0 && 1 / v < 0) {
        st.tags = true
        return NEG_ZERO_TAG
      }
      return v
    case 'string':
      return isWellFormed(v) ? v : wideString(v, st)
    case 'boolean':
    case 'undefined':
    case 'bigint':
      return v
    case 'object':
      if (v === null) return v
      if (key !== undefined) {
        st.path.push(key)
        const r = prepObject(v, st, depth + 1)
        st.path.pop()
        return r
      }
      return prepObject(v, st, depth + 1)
    default:
      throw unsendable(v, st, key)
  }
}

function wideString(s: string, st: EncState): unknown[] {
  st.tags = true
  const n = s.length
  const b = new Uint8Array(n * 2)
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i)
    b[2 * i] = c & 0xff
    b[2 * i + 1] = c >> 8
  }
  return [C1, T_WSTR, b]
}

function prepObject(v: object, st: EncState, depth: number): unknown {
  if (depth > MAX_DEPTH) throw tooDeep(v, st)
  st.objs.push(v)
  const r = prepObjectInner(v, st, depth)
  st.objs.pop()
  return r
}

function prepObjectInner(v: object, st: EncState, depth: number): unknown {
  if (Array.isArray(v)) return prepArray(v, st, depth)
  const proto = Object.getPrototypeOf(v) as object | null
  if (proto === Object.prototype) {
    return hasOwn.call(v, '__proto__') ? prepExoticObject(v, st, depth, false) : prepPlainObject(v as Record<string, unknown>, st, depth)
  }
  if (proto === null) return prepExoticObject(v, st, depth, true)
  if (v instanceof FutureRef) {
    if (typeof v.key !== 'string') throw new CodecError(`cannot send ${formatPath(st.root, st.path)}: a FutureRef whose key is not a string`, formatPath(st.root, st.path))
    st.tags = true
    return [C1, T_REF, v.key]
  }
  if (ArrayBuffer.isView(v)) return blobTag(v, st)
  if (v instanceof Date) return proto === Date.prototype ? v : new Date(dateGetTime.call(v))
  if (v instanceof Map) return prepMap(v, st, depth)
  if (v instanceof Set) return prepSet(v, st, depth)
  if (v instanceof ArrayBuffer) return blobTag(v, st)
  if (v instanceof RegExp) {
    st.tags = true
    return [C1, T_REGEXP, v.source, v.flags]
  }
  if (v instanceof Error) return prepError(v, st, depth)
  // other realms, or odd prototypes: decide by brand
  const tag = objectToString.call(v)
  switch (tag) {
    case '[object Object]':
      if (proto !== null && Object.getPrototypeOf(proto) === null && hasOwn.call(proto, 'hasOwnProperty') && (proto as { constructor?: { name?: unknown } }).constructor?.name === 'Object') {
        return hasOwn.call(v, '__proto__') ? prepExoticObject(v, st, depth, false) : prepPlainObject(v as Record<string, unknown>, st, depth)
      }
      break
    case '[object Date]':
      if (brand(v, dateGetTime)) return new Date(dateGetTime.call(v))
      break
    case '[object Map]':
      if (brand(v, mapSize)) return prepMap(v as Map<unknown, unknown>, st, depth)
      break
    case '[object Set]':
      if (brand(v, setSize)) return prepSet(v as Set<unknown>, st, depth)
      break
    case '[object ArrayBuffer]':
      if (brand(v, abByteLength)) return blobTag(v, st)
      break
    case '[object SharedArrayBuffer]':
      if (brand(v, sabByteLength)) return blobTag(v, st)
      break
    case '[object RegExp]':
      if (brand(v, regexpSource)) {
        st.tags = true
        return [C1, T_REGEXP, (v as RegExp).source, (v as RegExp).flags]
      }
      break
    case '[object Error]':
      return prepError(v as Error, st, depth)
  }
  throw unsendable(v, st, undefined)
}

function prepArray(a: readonly unknown[], st: EncState, depth: number): unknown[] {
  let out: unknown[] | undefined
  const n = a.length
  for (let i = 0; i < n; i++) {
    const x = a[i]
    let y: unknown
    switch (typeof x) {
      case 'number':
        if (x !== 0 || 1 / x > 0) {
          if (out !== undefined) out[i] = x
          continue
        }
        st.tags = true
        y = NEG_ZERO_TAG
        break
      case 'string':
        if (isWellFormed(x)) {
          if (out !== undefined) out[i] = x
          continue
        }
        y = wideString(x, st)
        break
      case 'boolean':
      case 'undefined':
      case 'bigint':
        if (out !== undefined) out[i] = x
        continue
      default:
        if (x === null) {
          if (out !== undefined) out[i] = x
          continue
        }
        y = prep(x, st, depth, i)
        if (y === x) {
          if (out !== undefined) out[i] = x
          continue
        }
    }
    if (out === undefined) out = a.slice(0, i)
    out[i] = y
  }
  return out ?? (a as unknown[])
}

function prepPlainObject(o: Record<string, unknown>, st: EncState, depth: number): unknown {
  const keys = Object.keys(o)
  let out: Record<string, unknown> | undefined
  for (let j = 0; j < keys.length; j++) {
    const k = keys[j]!
    if (!isWellFormed(k)) return prepExoticObject(o, st, depth, false)
    const x = o[k]
    let y: unknown = x
    let changed = false
    switch (typeof x) {
      case 'number':
        if (x === 0 && 1 / x < 0) {
          st.tags = true
          y = NEG_ZERO_TAG
          changed = true
        }
        break
      case 'string':
        if (!isWellFormed(x)) {
          y = wideString(x, st)
          changed = true
        }
        break
      case 'boolean':
      case 'undefined':
      case 'bigint':
        break
      default:
        if (x !== null) {
          y = prep(x, st, depth, k)
          changed = y !== x
        }
    }
    if (out !== undefined) out[k] = y
    else if (changed) {
      out = {}
      for (let m = 0; m < j; m++) out[keys[m]!] = o[keys[m]!]
      out[k] = y
    }
  }
  return out ?? o
}

function prepExoticObject(o: object, st: EncState, depth: number, nullProto: boolean): unknown[] {
  st.tags = true
  const keys = Object.keys(o)
  const out: unknown[] = [C1, T_OBJ, nullProto ? 1 : 0]
  for (const k of keys) {
    out.push(isWellFormed(k) ? k : wideString(k, st))
    out.push(prep((o as Record<string, unknown>)[k], st, depth, k))
  }
  return out
}

function prepMap(m: Map<unknown, unknown>, st: EncState, depth: number): unknown[] {
  st.tags = true
  const out: unknown[] = [C1, T_MAP]
  let i = 0
  Map.prototype.forEach.call(m, (v: unknown, k: unknown) => {
    out.push(prep(k, st, depth, { s: `.keys()[${i}]` }))
    out.push(prep(v, st, depth, { s: typeof k === 'string' || typeof k === 'number' ? `.get(${JSON.stringify(k)})` : `.values()[${i}]` }))
    i++
  })
  return out
}

function prepSet(s: Set<unknown>, st: EncState, depth: number): unknown[] {
  st.tags = true
  const out: unknown[] = [C1, T_SET]
  let i = 0
  Set.prototype.forEach.call(s, (v: unknown) => {
    out.push(prep(v, st, depth, { s: `.values()[${i++}]` }))
  })
  return out
}

function prepError(e: Error, st: EncState, depth: number): unknown[] {
  st.tags = true
  const get = (k: string): unknown => {
    try {
      return (e as unknown as Record<string, unknown>)[k]
    } catch {
      return undefined
    }
  }
  const name = get('name')
  const message = get('message')
  const stack = get('stack')
  const hasCause = hasOwn.call(e, 'cause')
  const props: Record<string, unknown> = {}
  for (const k of Object.keys(e)) if (k !== 'cause' && k !== 'stack' && k !== 'message' && k !== 'name' && k !== '__proto__') props[k] = get(k)
  const errors = get('errors')
  if (Array.isArray(errors) && hasOwn.call(e, 'errors')) props.errors = errors
  return [
    C1,
    T_ERR,
    typeof name === 'string' ? name : 'Error',
    typeof message === 'string' ? message : String(message ?? ''),
    typeof stack === 'string' ? stack : undefined,
    hasCause ? 1 : 0,
    hasCause ? prep(get('cause'), st, depth, 'cause') : undefined,
    prep(props, st, depth, { s: '' }),
  ]
}

function blobTag(v: object, st: EncState): unknown[] {
  const known = st.blobTags?.get(v)
  if (known) return known
  let kind: number
  let bytes: Uint8Array
  if (ArrayBuffer.isView(v)) {
    const name = typedArrayTag.call(v)
    kind = name === undefined ? KIND_DV : (KIND_BY_NAME.get(name) ?? -1)
    if (kind < 0) throw unsendable(v, st, undefined)
    bytes = new Uint8Array(v.buffer, v.byteOffset, v.byteLength)
  } else {
    kind = KIND_AB
    bytes = new Uint8Array(v as ArrayBuffer)
  }
  const offset = st.blobLen
  st.blobLen = align8(offset + bytes.byteLength)
  ;(st.blobs ??= []).push({ bytes, offset })
  st.tags = true
  const tag = [C1, T_BLOB, kind, offset, bytes.byteLength]
  ;(st.blobTags ??= new Map()).set(v, tag)
  return tag
}

// ---------------------------------------------------------------------------------------
// Errors and paths

const IDENT = /^[A-Za-z_$][\w$]*$/

function formatPath(root: string, segs: readonly PathSeg[], last?: PathSeg): string {
  let s = root
  const all = last === undefined ? segs : [...segs, last]
  for (const seg of all) {
    if (typeof seg === 'number') s += `[${seg}]`
    else if (typeof seg === 'string') s += IDENT.test(seg) ? `.${seg}` : `[${JSON.stringify(seg)}]`
    else s += seg.s
  }
  return s
}

function errText(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}`
  try {
    return String(err)
  } catch {
    return 'a value'
  }
}

function className(v: object): string {
  try {
    const c = (v as { constructor?: { name?: unknown } }).constructor
    if (c && typeof c.name === 'string' && c.name) return c.name
  } catch {
    /* ignore */
  }
  return objectToString.call(v).slice(8, -1)
}

function unsendable(v: unknown, st: EncState, key: PathSeg | undefined): CodecError {
  const path = formatPath(st.root, st.path, key)
  let what: string
  let hint: string
  if (typeof v === 'function') {
    what = `a function${v.name ? ` (${v.name})` : ''}`
    hint = 'functions travel only as the task itself; pass data instead'
  } else if (typeof v === 'symbol') {
    what = 'a symbol'
    hint = 'symbols cannot be copied to another process; use a string'
  } else {
    const o = v as object
    const tag = objectToString.call(o)
    const name = className(o)
    if (tag === '[object Promise]' || name === 'Promise') {
      what = 'a Promise'
      hint = 'await it and pass its value (or pass a Future)'
    } else if (name === 'WeakMap' || name === 'WeakSet' || name === 'WeakRef' || name === 'FinalizationRegistry') {
      what = `a ${name}`
      hint = `weak collections cannot be copied; use a ${name === 'WeakSet' ? 'Set' : 'Map'} or plain data`
    } else if (name === 'Number' || name === 'String' || name === 'Boolean' || name === 'BigInt' || name === 'Symbol') {
      what = `a boxed ${name}`
      hint = 'pass the primitive instead (call .valueOf())'
    } else {
      what = `an instance of class ${name}`
      hint = 'only plain data can travel (objects, arrays, Map, Set, Date, typed arrays, ...); convert it to a plain object first'
    }
  }
  return new CodecError(`cannot send ${what} at ${path}: ${hint}`, path)
}

function tooDeep(v: object, st: EncState): CodecError {
  // objs[i] is the object at path.slice(0, i); a cycle shows up as an object that is its own ancestor
  const chain = [...st.objs, v]
  for (let j = 1; j < chain.length; j++) {
    for (let i = 0; i < j; i++) {
      if (chain[i] === chain[j]) {
        const at = formatPath(st.root, st.path.slice(0, j))
        const to = formatPath(st.root, st.path.slice(0, i))
        return new CodecError(`circular reference at ${at}: it refers back to ${to}; only trees of plain data can travel (shared parts are copied, cycles cannot be)`, at)
      }
    }
  }
  const path = formatPath(st.root, st.path)
  return new CodecError(`cannot send ${path}: nested more than ${MAX_DEPTH} levels deep`, path)
}

// ---------------------------------------------------------------------------------------
// Decoding

interface DecState {
  bytes: Uint8Array
  /** absolute offset of the blob area in bytes.buffer */
  base: number
  blobLen: number
  resolve: ((key: string) => unknown) | undefined
  cache: Map<number, unknown> | null
}

/**
 * Decodes bytes made by encodeValue. `resolve`, if given, is called for each FutureRef
 * and its return value is put in its place (used on the worker); errors it throws
 * propagate unchanged. Without resolve, FutureRef instances are returned as is.
 * Typed arrays in the result may be views into `bytes` (see the file comment): do not
 * mutate or reuse `bytes` afterwards. Throws CodecError for bytes it cannot decode.
 */
export function decodeValue(bytes: Uint8Array, resolve?: (key: string) => unknown): unknown {
  if (!((bytes as unknown) instanceof Uint8Array)) {
    const x = bytes as unknown
    if (x instanceof ArrayBuffer) bytes = new Uint8Array(x)
    else throw new CodecError(`cannot decode ${describeValue(x)}: expected a Uint8Array`)
  }
  const n = bytes.length
  if (n < 3 || bytes[0] !== MAGIC) throw bad('not an encoded value (bad header)')
  const flags = bytes[1]!
  if ((flags & 0xf0) !== VERSION) throw bad(`unknown codec version ${flags >> 4}`)
  if (flags & ~(0xf0 | F_TAGS | F_BLOBS)) throw bad('unknown flags')
  let start = 2
  let end = n
  let base = 0
  let blobLen = 0
  if (flags & F_BLOBS) {
    if (n < BLOB_HEADER + 1 || bytes[2] !== 0 || bytes[3] !== 0) throw bad('bad header')
    const S = readU32(bytes, 4)
    blobLen = readU32(bytes, 8) + readU32(bytes, 12) * 0x100000000
    start = BLOB_HEADER
    end = BLOB_HEADER + S
    const blobStart = align8(end)
    if (S < 1 || blobStart + blobLen !== n) throw bad('truncated or wrong length')
    base = bytes.byteOffset + blobStart
  }
  let v: unknown
  try {
    v = packr.unpack(bytes as never, { start, end })
  } catch (err) {
    throw bad(errText(err), err)
  }
  if (!(flags & F_TAGS)) return v
  const st: DecState = { bytes, base, blobLen, resolve, cache: null }
  return restore(v, st, 0)
}

function bad(why: string, cause?: unknown): CodecError {
  return new CodecError(`cannot decode value: ${why}`, '', cause === undefined ? undefined : { cause })
}

function restore(v: unknown, st: DecState, depth: number): unknown {
  if (typeof v !== 'object' || v === null) return v
  if (depth > 2 * MAX_DEPTH + 8) throw bad('nested too deeply')
  if (Array.isArray(v)) {
    if (v.length > 0 && v[0] === C1) return restoreTagged(v, st, depth)
    for (let i = 0; i < v.length; i++) {
      const x: unknown = v[i]
      if (typeof x === 'object' && x !== null) {
        const y = restore(x, st, depth + 1)
        if (y !== x) v[i] = y
      }
    }
    return v
  }
  if (Object.getPrototypeOf(v) === Object.prototype) {
    const o = v as Record<string, unknown>
    for (const k in o) {
      const x = o[k]
      if (typeof x === 'object' && x !== null) {
        const y = restore(x, st, depth + 1)
        if (y !== x) o[k] = y
      }
    }
  }
  return v
}

function restoreTagged(a: unknown[], st: DecState, depth: number): unknown {
  const tag = a[1]
  const n = a.length
  switch (tag) {
    case T_NEGZERO:
      if (n !== 2) break
      return -0
    case T_REF: {
      const key = a[2]
      if (n !== 3 || typeof key !== 'string') break
      return st.resolve ? st.resolve(key) : new FutureRef(key)
    }
    case T_MAP: {
      if (n % 2 !== 0) break
      const m = new Map<unknown, unknown>()
      for (let i = 2; i < n; i += 2) m.set(restore(a[i], st, depth + 1), restore(a[i + 1], st, depth + 1))
      return m
    }
    case T_SET: {
      const s = new Set<unknown>()
      for (let i = 2; i < n; i++) s.add(restore(a[i], st, depth + 1))
      return s
    }
    case T_OBJ: {
      if (n % 2 !== 1 || (a[2] !== 0 && a[2] !== 1)) break
      const o: Record<string, unknown> = a[2] === 1 ? (Object.create(null) as Record<string, unknown>) : {}
      for (let i = 3; i < n; i += 2) {
        const k = restore(a[i], st, depth + 1)
        if (typeof k !== 'string') throw bad('malformed object key')
        const val = restore(a[i + 1], st, depth + 1)
        if (k === '__proto__') Object.defineProperty(o, k, { value: val, writable: true, enumerable: true, configurable: true })
        else o[k] = val
      }
      return o
    }
    case T_BLOB:
      if (n !== 5) break
      return blob(a[2], a[3], a[4], st)
    case T_WSTR: {
      const b = a[2]
      if (n !== 3 || !(b instanceof Uint8Array) || b.length % 2 !== 0) break
      let s = ''
      const CHUNK = 8192
      const units: number[] = []
      for (let i = 0; i < b.length; i += 2) {
        units.push(b[i]! | (b[i + 1]! << 8))
        if (units.length === CHUNK) {
          s += String.fromCharCode(...units)
          units.length = 0
        }
      }
      return s + String.fromCharCode(...units)
    }
    case T_ERR:
      if (n !== 8 || typeof a[2] !== 'string' || typeof a[3] !== 'string') break
      return restoreError(a, st, depth)
    case T_REGEXP:
      if (n !== 4 || typeof a[2] !== 'string' || typeof a[3] !== 'string') break
      try {
        return new RegExp(a[2], a[3])
      } catch (err) {
        throw bad('invalid RegExp', err)
      }
  }
  throw bad(`malformed tagged value (tag ${String(tag)})`)
}

const ERROR_CLASSES: Record<string, ErrorConstructor | undefined> = {
  Error,
  TypeError,
  RangeError,
  SyntaxError,
  ReferenceError,
  EvalError,
  URIError,
}

function restoreError(a: unknown[], st: DecState, depth: number): Error {
  const name = a[2] as string
  const message = a[3] as string
  const props = restore(a[7], st, depth + 1)
  let e: Error
  const Agg = g.AggregateError as (new (errors: unknown[], message: string) => Error) | undefined
  if (name === 'AggregateError' && Agg) {
    const errs = props && typeof props === 'object' ? (props as Record<string, unknown>).errors : undefined
    e = new Agg(Array.isArray(errs) ? errs : [], message)
  } else {
    const Ctor = hasOwn.call(ERROR_CLASSES, name) ? ERROR_CLASSES[name] : undefined
    e = Ctor ? new Ctor(message) : new Error(message)
    if (!Ctor) Object.defineProperty(e, 'name', { value: name, writable: true, enumerable: false, configurable: true })
  }
  if (typeof a[4] === 'string') Object.defineProperty(e, 'stack', { value: a[4], writable: true, enumerable: false, configurable: true })
  else if (a[4] !== undefined) throw bad('malformed Error')
  if (a[5] === 1) Object.defineProperty(e, 'cause', { value: restore(a[6], st, depth + 1), writable: true, enumerable: false, configurable: true })
  if (props && typeof props === 'object') {
    for (const k of Object.keys(props)) {
      if (k === 'errors' && name === 'AggregateError') continue
      Object.defineProperty(e, k, { value: (props as Record<string, unknown>)[k], writable: true, enumerable: true, configurable: true })
    }
  }
  return e
}

function blob(kind: unknown, off: unknown, len: unknown, st: DecState): unknown {
  if (typeof kind !== 'number' || typeof off !== 'number' || typeof len !== 'number') throw bad('malformed binary reference')
  const k = KINDS[kind]
  if (!k || !Number.isInteger(off) || !Number.isInteger(len) || off < 0 || len < 0 || off % 8 !== 0 || off + len > st.blobLen || len % k.bpe !== 0) {
    throw bad('malformed binary reference')
  }
  const cacheKey = off * 16 + kind
  const hit = st.cache?.get(cacheKey)
  if (hit !== undefined) return hit
  const abs = st.base + off
  // bytes in shared memory are copied out: a decoded value never shares memory with another thread
  const buf = st.bytes.buffer instanceof ArrayBuffer ? st.bytes.buffer : undefined
  const copy = (): ArrayBuffer => {
    if (buf) return buf.slice(abs, abs + len)
    const own = new Uint8Array(len)
    own.set(new Uint8Array(st.bytes.buffer, abs, len))
    return own.buffer
  }
  let out: unknown
  if (kind === KIND_AB) out = copy()
  else if (kind === KIND_DV) out = buf ? new DataView(buf, abs, len) : new DataView(copy())
  else {
    const C = k.ctor
    if (!C) throw bad(`${k.name} is not supported by this runtime`)
    out = buf && abs % k.bpe === 0 ? new C(buf, abs, len / k.bpe) : new C(copy())
  }
  ;(st.cache ??= new Map()).set(cacheKey, out)
  return out
}

// ---------------------------------------------------------------------------------------
// Inspection

/**
 * Keys of every FutureRef inside value (the walk of nested.ts: arrays, plain objects,
 * Map keys and values, Set items, Error causes), added to `out`. Primitives and binary
 * data cost nothing; shared and cyclic structures are visited once.
 */
export function collectRefs(value: unknown, out: Set<string> = new Set()): Set<string> {
  forEachNested(value, isRef, ref => { out.add((ref as FutureRef).key) })
  return out
}

const isRef = (x: object): boolean => x instanceof FutureRef

const SAMPLE_OVER = 4096
const SAMPLES = 512

/**
 * Rough in-memory size in bytes of a (decoded) value, for memory budgets: typed arrays
 * and ArrayBuffers by byteLength, strings 2 per code unit, numbers 8, plus a small
 * overhead per container slot. Arrays and objects over 4096 items are estimated from a
 * sample; each object is counted once.
 */
export function sizeOf(value: unknown): number {
  if (typeof value !== 'object' || value === null) return primitiveSize(value)
  return Math.round(objectSize(value, new Set(), 0))
}

function primitiveSize(v: unknown): number {
  switch (typeof v) {
    case 'number':
      return 8
    case 'string':
      return 2 * v.length
    case 'boolean':
      return 4
    case 'bigint': {
      const a = v < 0n ? -v : v
      return a < 0x10000000000000000n ? 16 : 16 + Math.ceil(a.toString(16).length / 2)
    }
    case 'symbol':
    case 'function':
      return 8
    default:
      return 0
  }
}

function valueSize(x: unknown, seen: Set<object>, depth: number): number {
  return typeof x === 'object' && x !== null ? objectSize(x, seen, depth + 1) : primitiveSize(x)
}

function objectSize(v: object, seen: Set<object>, depth: number): number {
  if (ArrayBuffer.isView(v)) return v.byteLength
  if (v instanceof ArrayBuffer) return v.byteLength
  if (seen.has(v) || depth > 1000) return 8
  seen.add(v)
  if (Array.isArray(v)) {
    const n = v.length
    if (n <= SAMPLE_OVER) {
      let s = 16 + 8 * n
      for (let i = 0; i < n; i++) s += valueSize(v[i], seen, depth)
      return s
    }
    let s = 0
    const step = n / SAMPLES
    for (let i = 0; i < SAMPLES; i++) s += valueSize(v[Math.floor(i * step)], seen, depth)
    return 16 + 8 * n + (s * n) / SAMPLES
  }
  if (v instanceof Date) return 24
  if (v instanceof FutureRef) return 16 + 2 * v.key.length
  if (v instanceof Map || v instanceof Set) {
    const n = v.size
    let s = 0
    let i = 0
    for (const e of v.entries()) {
      s += valueSize(e[0], seen, depth) + (v instanceof Map ? valueSize(e[1], seen, depth) : 0)
      if (++i >= SAMPLE_OVER) break
    }
    return 32 + 16 * n + (i > 0 ? (s * n) / i : 0)
  }
  const keys = Object.keys(v)
  const n = keys.length
  const m = n <= SAMPLE_OVER ? n : SAMPLES
  const step = n / m
  let s = 0
  for (let i = 0; i < m; i++) {
    const k = keys[Math.floor(i * step)]!
    s += 8 + 2 * k.length + valueSize((v as Record<string, unknown>)[k], seen, depth)
  }
  return 32 + (m > 0 ? (s * n) / m : 0)
}

/**
 * Bytes of the typed arrays and DataViews inside `value` that are views into the memory
 * of `bytes` (an encoding the value was decoded from), each counted once: how much of
 * that encoding is the value's own memory. 0 at once when the encoding has no binary data.
 */
export function viewedBytes(value: unknown, bytes: Uint8Array): number {
  if (typeof value !== 'object' || value === null || bytes.length < 2 || !(bytes[1]! & F_BLOBS)) return 0
  const buffer = bytes.buffer
  const counted = new Set<object>()
  let total = 0
  const walk = (v: unknown, seen: Set<object>, depth: number): void => {
    if (typeof v !== 'object' || v === null) return
    if (ArrayBuffer.isView(v)) {
      if (v.buffer === buffer && !counted.has(v)) { counted.add(v); total += v.byteLength }
      return
    }
    if (v instanceof ArrayBuffer || seen.has(v) || depth > 1000) return
    seen.add(v)
    if (Array.isArray(v)) { for (const x of v) walk(x, seen, depth + 1); return }
    if (v instanceof Map) { for (const [k, x] of v) { walk(k, seen, depth + 1); walk(x, seen, depth + 1) } return }
    if (v instanceof Set) { for (const x of v) walk(x, seen, depth + 1); return }
    if (v instanceof Date || v instanceof FutureRef || v instanceof RegExp) return
    if (v instanceof Error) { walk((v as { cause?: unknown }).cause, seen, depth + 1) }
    for (const k of Object.keys(v)) walk((v as Record<string, unknown>)[k], seen, depth + 1)
  }
  walk(value, new Set(), 0)
  return total
}

/** A short description of a value's type/shape for errors and dashboards: "Float64Array(1000000)", "Array(3)", "Map(2)", "number", "string(12)", "Object(4)", "Foo". */
export function describeValue(value: unknown): string {
  switch (typeof value) {
    case 'string':
      return `string(${value.length})`
    case 'function':
      return value.name ? `function ${value.name}` : 'function'
    case 'object':
      break
    default:
      return typeof value
  }
  if (value === null) return 'null'
  try {
    if (Array.isArray(value)) return `Array(${value.length})`
    if (ArrayBuffer.isView(value)) {
      const name = typedArrayTag.call(value)
      return name ? `${name}(${(value as unknown as { length: number }).length})` : `DataView(${value.byteLength})`
    }
    if (value instanceof ArrayBuffer) return `ArrayBuffer(${value.byteLength})`
    if (value instanceof Map) return `Map(${value.size})`
    if (value instanceof Set) return `Set(${value.size})`
    if (value instanceof Date) return 'Date'
    if (value instanceof FutureRef) return `FutureRef(${value.key})`
    const proto = Object.getPrototypeOf(value) as object | null
    if (proto === Object.prototype || proto === null) return `Object(${Object.keys(value).length})`
    if (value instanceof Error) return value.name || 'Error'
    return className(value)
  } catch {
    return 'object'
  }
}
