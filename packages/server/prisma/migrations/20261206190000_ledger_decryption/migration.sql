-- AlterTable
ALTER TABLE "PrivacyLedgerEntry" ADD COLUMN     "decryption" JSONB;
