// comlink ships its Node adapter without typings for the .mjs path that Node ESM resolves.
declare module 'comlink/dist/esm/node-adapter.mjs' {
  import type { Endpoint } from 'comlink'
  /** Wraps a worker_threads Worker or parentPort as a comlink Endpoint. */
  export default function nodeEndpoint(nep: unknown): Endpoint
}
