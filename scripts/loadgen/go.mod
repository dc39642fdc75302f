module coupon/loadgen

go 1.21
