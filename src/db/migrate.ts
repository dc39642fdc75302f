import { createOrm } from './orm.ts';

/** Applies every pending migration to the database in the URL. */
export async function migrateUp(mysqlUrl: string): Promise<string[]> {
  const orm = await createOrm(mysqlUrl, { poolMax: 1 });
  try {
    const applied = await orm.migrator.up();
    return applied.map((migration) => migration.name);
  } finally {
    await orm.close(true);
  }
}

if (import.meta.main) {
  const { loadConfig } = await import('../config.ts');
  const applied = await migrateUp(loadConfig().mysqlUrl);
  console.log(applied.length ? `applied: ${applied.join(', ')}` : 'database is up to date');
}
