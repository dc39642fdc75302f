import { Migration } from '@mikro-orm/migrations';

/**
 * When an ended event was archived: its coupons all persisted, its Redis gate state deleted after EVENT_RETENTION.
 * An archived event lives in MySQL only; a restore of the gate state never brings it back into Redis.
 */
export class Migration20261201000003_event_archived extends Migration {
  override name = 'Migration20261201000003_event_archived';

  override up(): void {
    this.addSql('alter table coupon_event add column archived_at datetime(3) null');
  }

  override down(): void {
    this.addSql('alter table coupon_event drop column archived_at');
  }
}
