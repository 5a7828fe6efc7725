-- AlterTable
ALTER TABLE "PrivacyLedgerEntry" ADD COLUMN     "epsilonCoordinator" DOUBLE PRECISION;
