import { Migration } from '@mikro-orm/migrations';

/**
 * The gate epoch of an event: raised before every rebuild or repair of its Redis gate state from MySQL, and
 * checked (under a shared row lock) by every coupon insert, so work prepared against an older gate state can never
 * be written after the state it was checked against was replaced.
 */
export class Migration20261201000001_event_epoch extends Migration {
  override name = 'Migration20261201000001_event_epoch';

  override up(): void {
    this.addSql('alter table coupon_event add column epoch int unsigned not null default 0');
  }

  override down(): void {
    this.addSql('alter table coupon_event drop column epoch');
  }
}
