// Shared by the examples: connect to TABGRID_URL when it is set (a grid you started with
// `npm start` or `npx tabgrid coordinator` and `npx tabgrid worker …`; TABGRID_TOKEN is the
// client token it printed), else start a small grid in this process.
import { Client, startCoordinator, startWorker } from 'tabgrid'

export async function connect({ nprocs = 1, nthreads = 1, workers = 2 } = {}) {
  if (process.env.TABGRID_URL) {
    const client = await Client.connect()   // reads TABGRID_URL and TABGRID_TOKEN
    return { client, close: () => client.close() }
  }
  const coord = await startCoordinator({ port: 0 })
  const agents = []
  for (let i = 0; i < workers; i++) agents.push(await startWorker(coord.url, { nprocs, nthreads, name: `example-${i}` }))
  const client = await Client.connect(coord.url, { token: coord.clientToken })
  return {
    client,
    close: async () => {
      await client.close()
      for (const a of agents) await a.close()
      await coord.close()
    },
  }
}
