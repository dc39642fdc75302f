import { Migration } from '@mikro-orm/migrations';

/**
 * The kill switch of an event (`PATCH {"paused": true}`), kept with the event of record so a gate state rebuilt
 * from MySQL stays paused; and an index on coupon.user_id for a user's coupons across events
 * (`GET /v1/users/:userId/coupons`), which the (event_id, user_id) unique key cannot serve.
 */
export class Migration20261201000002_event_paused extends Migration {
  override name = 'Migration20261201000002_event_paused';

  override up(): void {
    this.addSql('alter table coupon_event add column paused tinyint(1) not null default 0');
    this.addSql('create index coupon_user_id_index on coupon (user_id)');
  }

  override down(): void {
    this.addSql('drop index coupon_user_id_index on coupon');
    this.addSql('alter table coupon_event drop column paused');
  }
}
