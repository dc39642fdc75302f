import { MikroORM, defineConfig } from '@mikro-orm/mysql';
import { Migrator } from '@mikro-orm/migrations';
import { CouponEventSchema, CouponSchema } from './entities.ts';
import { Migration20261125000000_initial } from './migrations/Migration20261125000000_initial.ts';
import { Migration20261201000000_exact_ids } from './migrations/Migration20261201000000_exact_ids.ts';
import { Migration20261201000001_event_epoch } from './migrations/Migration20261201000001_event_epoch.ts';
import { Migration20261201000002_event_paused } from './migrations/Migration20261201000002_event_paused.ts';
import { Migration20261201000003_event_archived } from './migrations/Migration20261201000003_event_archived.ts';
import { Migration20261206000000_coupon_request_id } from './migrations/Migration20261206000000_coupon_request_id.ts';

export type Orm = MikroORM;

/** MikroORM for MySQL 8 (MariaDB locally). Times are stored and read as UTC. */
export function ormConfig(mysqlUrl: string, options: { poolMax?: number } = {}) {
  return defineConfig({
    clientUrl: mysqlUrl,
    entities: [CouponEventSchema, CouponSchema],
    timezone: '+00:00',
    pool: { min: 0, max: options.poolMax ?? 10 },
    driverOptions: { connectTimeout: 3_000 },
    extensions: [Migrator],
    migrations: {
      tableName: 'mikro_orm_migrations',
      migrationsList: [
        { name: 'Migration20261125000000_initial', class: Migration20261125000000_initial },
        { name: 'Migration20261201000000_exact_ids', class: Migration20261201000000_exact_ids },
        { name: 'Migration20261201000001_event_epoch', class: Migration20261201000001_event_epoch },
        { name: 'Migration20261201000002_event_paused', class: Migration20261201000002_event_paused },
        { name: 'Migration20261201000003_event_archived', class: Migration20261201000003_event_archived },
        { name: 'Migration20261206000000_coupon_request_id', class: Migration20261206000000_coupon_request_id },
      ],
      transactional: false,
      // Migrations are hand-written SQL; no schema snapshot file is kept, and the caller reports what ran.
      snapshot: false,
      snapshotOnMigrate: false,
      silent: true,
    },
    debug: false,
  });
}

export function createOrm(mysqlUrl: string, options: { poolMax?: number } = {}): Promise<Orm> {
  return MikroORM.init(ormConfig(mysqlUrl, options));
}
