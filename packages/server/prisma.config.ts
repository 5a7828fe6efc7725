// Prisma CLI configuration. `engine: "js"` makes the CLI use its WebAssembly
// schema engine through a driver adapter, so `prisma generate` and
// `prisma migrate diff` work offline (Prisma's native engines are downloaded
// from Prisma's own host on first use, which is not reachable everywhere).
import { defineConfig } from 'prisma/config';
import { PrismaPg } from '@prisma/adapter-pg';

export default defineConfig({
  experimental: { adapter: true },
  engine: 'js',
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  async adapter() {
    return new PrismaPg({ connectionString: process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres' });
  },
});
